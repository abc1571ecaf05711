"""Prompt data: rows from built-in generators or local files, mapped to canonical columns, then tokenized."""

from rlhf.data.prompts import PromptBatch, PromptStream, load_rows, read_chat_template

__all__ = ["PromptBatch", "PromptStream", "load_rows", "read_chat_template"]
