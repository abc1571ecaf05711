"""Run the configured reward functions over a batch and check what they return."""

import asyncio
import concurrent.futures
import inspect
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rlhf.imports import import_object
from rlhf.rewards.functions import REWARD_FUNCTIONS, final_text
from rlhf.rewards.signatures import given_keywords, signature_problem


class RewardFunctionError(RuntimeError):
    pass


@dataclass
class TrainerState:
    """TRL's `trainer_state` as a reward function reads it for shaping by progress: updates done, updates planned."""

    global_step: int
    max_steps: int



def resolve_function(name: str):
    """A built-in name (`bleu`) or an import path (`package.module:function`)."""
    if ":" not in name:
        return REWARD_FUNCTIONS.get(name)
    try:
        return import_object(name)
    except ValueError as err:
        raise ValueError(f"reward function {err}") from err


def check_reward_sources(reward_cfg, columns, environments: bool, key: str = "reward.functions") -> None:
    """Every reward function resolves and takes the keyword arguments of a call, and every reward-model folder is a
    model folder, checked where the run starts (a reward actor that cannot be built would otherwise be taken for a
    crash and restarted; a signature that cannot take a call would fail only at the first scoring). `columns` and
    `environments`: what a call gives besides prompts and completions (rlhf/rewards/signatures.py)."""
    for index, function in enumerate(reward_cfg.functions):
        try:
            fn = resolve_function(function.name)
        except (ValueError, KeyError) as err:
            raise ValueError(f"{key}[{index}] ({function.name!r}): {err}") from err
        problem = signature_problem(fn, given_keywords(columns, function.kwargs, environments))
        if problem:
            raise ValueError(f"{key}[{index}] ({function.name!r}): {problem}")
    for model in reward_cfg.models:
        if not (Path(model.path) / "config.json").is_file():
            raise ValueError(f"reward.models {model.label!r}: {model.path!r} is not a HF model folder (no config.json)")


class RewardScorer:
    """Each function is one objective, labelled by `label` (default: its name). Sync functions run in a worker
    thread and async ones in an event loop, both under `timeout_s` per call."""

    def __init__(self, functions: list[dict], timeout_s: float):
        self.functions, self.timeout_s = [], timeout_s
        for spec in functions:
            label = spec.get("label") or spec["name"]
            if label in [f[0] for f in self.functions]:
                raise ValueError(f"two reward functions are labelled {label!r}: give one a distinct `label`")
            self.functions.append((label, resolve_function(spec["name"]), dict(spec.get("kwargs") or {})))
        # built-ins read text: an episode's completion (its messages) reaches them as its last assistant turn;
        # functions of the user's get the messages, TRL's multi-turn shape
        self.builtin = {label for label, spec in zip(self.labels, functions) if ":" not in spec["name"]}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self.logged_metrics, self.logged_extras = defaultdict(list), defaultdict(list)  # log_metric's, log_extra's

    @property
    def labels(self) -> list[str]:
        return [label for label, _, _ in self.functions]

    def score(self, prompts: list, completions: list[str], columns: dict[str, list],
              extras: dict | None = None) -> dict[str, list[float]]:
        """label -> one float per completion (NaN where the function returned None or NaN: unscorable). `extras`:
        TRL's keyword arguments of the call (`completion_ids`, `trainer_state`, and `environments` in a run with
        environments); `log_metric` and `log_extra` are added here, their values kept until `drain_logs`."""
        out = {}
        texts = [final_text(c) for c in completions]
        columns = {**columns, **(extras or {}), "log_metric": self.log_metric, "log_extra": self.log_extra}
        for label, fn, kwargs in self.functions:
            given = texts if label in self.builtin else completions
            try:
                values = self._call(fn, prompts, given, columns, kwargs)
            except TimeoutError as err:
                raise RewardFunctionError(f"reward function {label!r} timed out after {self.timeout_s} s on a batch "
                                          f"of {len(completions)} (reward.timeout_s)") from err
            except Exception as err:
                culprit = self._find_failing_sample(fn, prompts, given, columns, kwargs)
                raise RewardFunctionError(f"reward function {label!r} raised {err!r}{culprit}") from err
            out[label] = _check_values(label, values, len(completions))
        return out

    def _call(self, fn, prompts, completions, columns, kwargs):
        arguments = {"prompts": prompts, "completions": completions, **columns, **kwargs}
        if inspect.iscoroutinefunction(fn):
            return asyncio.run(asyncio.wait_for(fn(**arguments), self.timeout_s))
        try:
            return self._pool.submit(fn, **arguments).result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            # the stuck call keeps its thread; later calls get a fresh one
            self._pool.shutdown(wait=False)
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            raise TimeoutError from None

    def _find_failing_sample(self, fn, prompts, completions, columns, kwargs) -> str:
        """Re-run sample by sample to name the one that makes the function raise."""
        for i in range(len(completions)):
            try:
                one = {k: v[i : i + 1] if isinstance(v, list) else v for k, v in columns.items()}
                self._call(fn, prompts[i : i + 1], completions[i : i + 1], one, kwargs)
            except Exception:
                return f" on sample {i} (completion {completions[i][:200]!r})"
        return ""


    def log_metric(self, name: str, value: float) -> None:
        """TRL's `log_metric`: a scalar logged beside the rewards, averaged over the step."""
        self.logged_metrics[name].append(float(value))

    def log_extra(self, column: str, values: list) -> None:
        """TRL's `log_extra`: a column of values, one per completion, shown with the step's logged sample."""
        self.logged_extras[column].extend(values)

    def drain_logs(self) -> tuple[dict[str, float], dict[str, list]]:
        """What the functions logged since the last drain: each metric's mean, each extra column's values."""
        metrics = {name: sum(values) / len(values) for name, values in self.logged_metrics.items() if values}
        extras = dict(self.logged_extras)
        self.logged_metrics.clear()
        self.logged_extras.clear()
        return metrics, extras


def _check_values(name: str, values, expected: int) -> list[float]:
    # a numpy array or a torch tensor (TRL takes any sequence of numbers): its values, NaN still unscorable
    if hasattr(values, "shape") and hasattr(values, "tolist"):
        if len(values.shape) != 1:
            raise RewardFunctionError(f"reward function {name!r} returned an array of shape {tuple(values.shape)} for "
                                      f"{expected} completions: return one value per completion (1-D)")
        values = values.tolist()
    if not isinstance(values, (list, tuple)) or len(values) != expected:
        got = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
        raise RewardFunctionError(f"reward function {name!r} returned {got} values for {expected} completions")
    out = []
    for index, value in enumerate(values):
        if value is None:
            out.append(math.nan)
            continue
        try:
            value = float(value)
        except (TypeError, ValueError) as err:
            raise RewardFunctionError(f"reward function {name!r} returned {value!r} for sample {index}") from err
        if math.isinf(value):
            raise RewardFunctionError(f"reward function {name!r} returned {value} for sample {index}: rewards must be "
                                      "finite (return None or NaN for a sample that cannot be scored)")
        out.append(value)
    return out
