"""Built-in reward functions, in TRL's shape: fn(prompts, completions, **columns) -> list[float | None]."""

import re

from rlhf.algorithms.registry import Registry
from rlhf.rewards.bleu import bleu_score

REWARD_FUNCTIONS = Registry("reward function")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_answer(completion: str) -> str:
    """BLEUBERI scores only the inside of <answer>...</answer> when the completion has one."""
    match = _ANSWER_TAG.search(completion)
    return (match.group(1) if match else completion).strip()


@REWARD_FUNCTIONS.register("bleu")
def bleu(prompts, completions, references=None, **_) -> list[float]:
    """Smoothed sentence BLEU against the row's references; an empty completion scores 0 (BLEUBERI)."""
    if references is None:
        raise ValueError("the bleu reward needs a 'references' column: map one with data.columns.references")
    scores = []
    for completion, refs in zip(completions, references):
        answer = extract_answer(completion)
        scores.append(bleu_score(answer, refs) if answer else 0.0)
    return scores
