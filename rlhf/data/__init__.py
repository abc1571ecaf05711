"""Prompt data: rows from built-in generators or local files, mapped to canonical columns, then tokenized."""

from rlhf.data.prompts import PromptBatch, PromptStream, hold_out, load_rows, prompt_sets, read_chat_template

__all__ = ["PromptBatch", "PromptStream", "hold_out", "load_rows", "prompt_sets", "read_chat_template"]
