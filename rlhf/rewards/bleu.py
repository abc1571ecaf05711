"""Sentence BLEU with HF `evaluate`'s semantics, offline.

BLEUBERI rewards a completion with `evaluate.load("bleu").compute(..., smooth=True)`, which downloads its
script from a hub at run time. We reproduce that computation exactly (spec §2.1):
- tokens: sacrebleu's 13a tokenizer (evaluate ships a copy of it);
- n-grams up to 4, the references' counts merged by element-wise max, candidate counts clipped to them;
- add-one smoothing on every order (Lin & Och 2004) when `smooth`;
- brevity penalty against the SHORTEST reference, 0 when either side is empty.
"""

import math
from collections import Counter
from functools import lru_cache

from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

MAX_ORDER = 4
_tokenize_13a = Tokenizer13a()


@lru_cache(maxsize=65536)
def tokenize_13a(text: str) -> tuple[str, ...]:
    return tuple(_tokenize_13a(text).split())


def _ngrams(tokens: tuple[str, ...], max_order: int) -> Counter:
    counts = Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            counts[tokens[i : i + n]] += 1
    return counts


def bleu_score(prediction: str, references: list[str], smooth: bool = True, max_order: int = MAX_ORDER) -> float:
    """BLEU of one prediction against its references, in [0, 1]."""
    if isinstance(references, str):
        raise TypeError("references must be a list of strings, not a single string")
    if not references:
        raise ValueError("bleu_score needs at least one reference")
    candidate = tokenize_13a(prediction)
    refs = [tokenize_13a(r) for r in references]

    merged = Counter()
    for ref in refs:
        merged |= _ngrams(ref, max_order)
    overlap = _ngrams(candidate, max_order) & merged

    matches = [0] * max_order
    for ngram, count in overlap.items():
        matches[len(ngram) - 1] += count
    possible = [max(0, len(candidate) - n + 1) for n in range(1, max_order + 1)]

    if smooth:
        precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
    else:
        precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    if min(precisions) <= 0:
        return 0.0
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order)

    c, r = len(candidate), min(len(ref) for ref in refs)
    if c == 0 or r == 0:
        return 0.0
    brevity_penalty = 1.0 if c > r else math.exp(1.0 - r / c)
    return geo_mean * brevity_penalty
