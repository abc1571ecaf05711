"""Built-in reward functions, in TRL's shape: fn(prompts, completions, **columns) -> list[float | None].

Each is registered by name for `conf/reward/*.yaml`; extra options come from the function's `kwargs`.
"""

import re
from functools import lru_cache

from rlhf.algorithms.registry import Registry
from rlhf.rewards.bleu import bleu_score

REWARD_FUNCTIONS = Registry("reward function")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(completion: str) -> str:
    """BLEUBERI scores only the inside of <answer>...</answer> when the completion has one."""
    match = _ANSWER_TAG.search(completion)
    return (match.group(1) if match else completion).strip()


def _needs(column: str, values, reward: str):
    if values is None:
        raise ValueError(f"the {reward} reward needs a {column!r} column: map one with data.columns.{column}")
    return values


@REWARD_FUNCTIONS.register("bleu")
def bleu(prompts, completions, references=None, **_) -> list[float]:
    """Smoothed sentence BLEU against the row's references; an empty completion scores 0 (BLEUBERI)."""
    _needs("references", references, "bleu")
    scores = []
    for completion, refs in zip(completions, references):
        answer = extract_answer(completion)
        scores.append(bleu_score(answer, refs) if answer else 0.0)
    return scores


@REWARD_FUNCTIONS.register("exact_match")
def exact_match(prompts, completions, answer=None, **_) -> list[float]:
    """1 if the extracted answer equals the row's answer (surrounding whitespace ignored), else 0."""
    _needs("answer", answer, "exact_match")
    return [float(extract_answer(c) == str(a).strip()) for c, a in zip(completions, answer)]


def last_number(text: str) -> float | None:
    numbers = _NUMBER.findall(text)
    return float(numbers[-1].replace(",", "")) if numbers else None


@REWARD_FUNCTIONS.register("numeric_match")
def numeric_match(prompts, completions, answer=None, tolerance: float = 1e-6, **_) -> list[float]:
    """1 if the last number of the extracted answer equals the row's numeric answer (within `tolerance`)."""
    _needs("answer", answer, "numeric_match")
    scores = []
    for completion, expected in zip(completions, answer):
        target, got = last_number(str(expected)), last_number(extract_answer(completion))
        if target is None:
            raise ValueError(f"numeric_match: the answer {expected!r} holds no number")
        scores.append(float(got is not None and abs(got - target) <= tolerance * max(1.0, abs(target))))
    return scores


@lru_cache(maxsize=None)
def _reasoning_gym_scorer(task: str):
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


@REWARD_FUNCTIONS.register("reasoning_gym")
def reasoning_gym_answer(prompts, completions, rg_task=None, rg_entry=None, **_) -> list[float]:
    """The task's own verifier from reasoning-gym (rows from `data.source=reasoning_gym` carry what it needs)."""
    _needs("rg_entry", rg_entry, "reasoning_gym")
    return [float(_reasoning_gym_scorer(task)(extract_answer(c), entry))
            for c, task, entry in zip(completions, rg_task, rg_entry)]


@REWARD_FUNCTIONS.register("format")
def format_match(prompts, completions, pattern: str = r"^<think>.*?</think>\s*<answer>.*?</answer>$", **_):
    """1 if the whole completion matches the regular expression `pattern` (default: BLEUBERI's think/answer)."""
    regex = re.compile(pattern, re.DOTALL)
    return [float(regex.fullmatch(c.strip()) is not None) for c in completions]


@REWARD_FUNCTIONS.register("length")
def length(prompts, completions, scale: float = 140.0, low: float = 0.0, high: float = float("inf"), **_):
    """Words / scale, clipped to [low, high] (PAMA's length objective is clip(l / 140, ...))."""
    return [min(max(len(c.split()) / scale, low), high) for c in completions]


@REWARD_FUNCTIONS.register("conciseness")
def conciseness(prompts, completions, max_words: int = 64, **_) -> list[float]:
    """1 for an empty answer, falling linearly to 0 at `max_words` words and beyond."""
    return [max(0.0, 1.0 - len(c.split()) / max_words) for c in completions]


@REWARD_FUNCTIONS.register("env")
def env(prompts, completions, env_reward=None, key: str | None = None, **_) -> list[float | None]:
    """The episode's own reward: `get_reward()` of its environment (env.factory), or what the agent returned
    (env.agent); `key` picks one entry of an agent's dict of rewards."""
    values = list(_needs("env_reward", env_reward, "env (an env.factory whose class defines get_reward, or env.agent)"))
    if key is not None:
        return [v.get(key) if isinstance(v, dict) else None for v in values]
    if any(isinstance(v, dict) for v in values):
        found = sorted({k for v in values if isinstance(v, dict) for k in v})
        raise ValueError(f"the episodes' rewards are dicts (keys {found}): read each with "
                         "{name: env, label: <name>, kwargs: {key: <key>}} in reward.functions")
    return values


# Their reward is 1 for a right answer (a matching format): a completion passes eval/pass@k there. The others
# (bleu, length, conciseness, env) define no passing (rlhf/passing.py)
for _verifier in (exact_match, numeric_match, reasoning_gym_answer, format_match):
    _verifier.pass_threshold = 1.0


def final_text(completion) -> str:
    """What a built-in function reads of a completion: the text itself, or an episode's last assistant turn."""
    if isinstance(completion, str):
        return completion
    return next((m.get("content") or "" for m in reversed(completion) if m.get("role") == "assistant"), "")
