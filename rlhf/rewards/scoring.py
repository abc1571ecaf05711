"""Run the configured reward functions over a batch and check what they return."""

import importlib
import inspect
import math
from dataclasses import dataclass

from rlhf.rewards.functions import REWARD_FUNCTIONS


class RewardFunctionError(RuntimeError):
    pass


def resolve_function(name: str):
    """A built-in name (`bleu`) or an import path (`package.module:function`)."""
    if ":" not in name:
        return REWARD_FUNCTIONS.get(name)
    module_name, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"reward function {name!r} cannot be imported: {err}") from err


@dataclass
class RewardResult:
    per_function: dict[str, list[float]]  # NaN where a function returned None or NaN (unscorable)
    total: list[float]  # weighted sum; NaN where any function could not score the sample


class RewardScorer:
    def __init__(self, functions: list[dict]):
        self.functions = []
        for spec in functions:
            fn = resolve_function(spec["name"])
            if inspect.iscoroutinefunction(fn):
                raise ValueError(f"reward function {spec['name']!r} is async; async rewards are not supported yet")
            self.functions.append((spec["name"], fn, float(spec["weight"]), dict(spec.get("kwargs") or {})))

    def score(self, prompts: list[str], completions: list[str], columns: dict[str, list]) -> RewardResult:
        per_function, total = {}, [0.0] * len(completions)
        for name, fn, weight, kwargs in self.functions:
            try:
                values = fn(prompts=prompts, completions=completions, **columns, **kwargs)
            except Exception as err:
                culprit = _find_failing_sample(fn, prompts, completions, columns, kwargs)
                raise RewardFunctionError(f"reward function {name!r} raised {err!r}{culprit}") from err
            values = _check_values(name, values, len(completions))
            per_function[name] = values
            total = [t + weight * v for t, v in zip(total, values)]
        return RewardResult(per_function, total)


def _check_values(name: str, values, expected: int) -> list[float]:
    if not isinstance(values, (list, tuple)) or len(values) != expected:
        got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        raise RewardFunctionError(f"reward function {name!r} returned {got} values for {expected} completions")
    out = []
    for index, value in enumerate(values):
        if value is None:
            out.append(math.nan)
            continue
        try:
            out.append(float(value))
        except (TypeError, ValueError) as err:
            raise RewardFunctionError(f"reward function {name!r} returned {value!r} for sample {index}") from err
    return out


def _find_failing_sample(fn, prompts, completions, columns, kwargs) -> str:
    """Re-run sample by sample to name the one that makes the function raise."""
    for i in range(len(completions)):
        try:
            fn(prompts=prompts[i : i + 1], completions=completions[i : i + 1],
               **{k: v[i : i + 1] for k, v in columns.items()}, **kwargs)
        except Exception:
            return f" on sample {i} (completion {completions[i][:200]!r})"
    return ""
