"""Where policy models come from: a local HF folder, the SmolLM2 GGUF from PyPI, or a tiny random model."""

from rlhf.models.resolve import resolve_model_path

__all__ = ["resolve_model_path"]
