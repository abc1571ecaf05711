"""Prompt data: rows from built-in generators or local files, mapped to canonical columns, then tokenized."""

from rlhf.data.prompts import PromptBatch, PromptStream, load_rows

__all__ = ["PromptBatch", "PromptStream", "load_rows"]
