"""Turn the `model` config group into a local HF folder."""

import os
from pathlib import Path

from rlhf.models.smollm2 import convert_smollm2
from rlhf.models.tiny import build_tiny_model


def cache_root() -> Path:
    return Path(os.environ.get("RLHF_CACHE", Path.home() / ".cache" / "rlhf"))


def resolve_model_path(source: str, path: str | None = None) -> str:
    """`source` is `smollm2` (converted from PyPI once), `tiny` (random, built locally) or `path` (a HF folder)."""
    if source == "smollm2":
        return str(convert_smollm2(cache_root() / "models" / "smollm2-135m-instruct"))
    if source == "tiny":
        return str(build_tiny_model(cache_root() / "models" / "tiny-llama"))
    if source == "path":
        if not path or not (Path(path) / "config.json").exists():
            raise FileNotFoundError(f"model.path={path!r} is not a HF model folder (no config.json)")
        return str(path)
    raise ValueError(f"unknown model.source {source!r}; choose smollm2, tiny or path")
