import asyncio
import math
import time

import pytest

from rlhf.rewards import RewardFunctionError, RewardScorer


def always_one(prompts, completions, **_):
    return [1.0] * len(completions)


def fails_on_bad(prompts, completions, **_):
    return [1 / 0 if c == "bad" else 0.5 for c in completions]


def wrong_count(prompts, completions, **_):
    return [1.0]


def some_none(prompts, completions, **_):
    return [None if c == "skip" else 2.0 for c in completions]


def infinite(prompts, completions, **_):
    return [1.0, float("-inf")]


def needs_column(prompts, completions, answer, **_):
    return [float(c == a) for c, a in zip(completions, answer)]


HERE = __name__


def scorer(*names, timeout_s=10.0):
    return RewardScorer([{"name": f"{HERE}:{n}", "weight": 1.0} for n in names], timeout_s)


async def async_length(prompts, completions, **_):
    await asyncio.sleep(0)
    return [float(len(c)) for c in completions]


async def async_hangs(prompts, completions, **_):
    await asyncio.sleep(60)


def sync_hangs(prompts, completions, **_):
    time.sleep(3)
    return [0.0] * len(completions)


def test_every_function_is_an_objective_of_its_own():
    result = scorer("always_one", "needs_column").score(["p", "p"], ["7", "8"], {"answer": ["7", "7"]})
    assert result == {f"{HERE}:always_one": [1.0, 1.0], f"{HERE}:needs_column": [1.0, 0.0]}


def test_labels_name_objectives_and_must_differ():
    spec = {"name": f"{HERE}:always_one", "weight": 1.0}
    labelled = RewardScorer([spec, {**spec, "label": "again"}], 10.0)
    assert labelled.labels == [f"{HERE}:always_one", "again"]
    with pytest.raises(ValueError, match="labelled"):
        RewardScorer([spec, spec], 10.0)


def test_async_functions_are_awaited():
    assert scorer("async_length").score(["p", "p"], ["ab", "abc"], {}) == {f"{HERE}:async_length": [2.0, 3.0]}


@pytest.mark.parametrize("name", ["async_hangs", "sync_hangs"])
def test_a_function_that_hangs_times_out_with_its_name(name):
    with pytest.raises(RewardFunctionError, match=rf"{name}.*timed out after 0.5 s"):
        scorer(name, timeout_s=0.5).score(["p"], ["a"], {})


def test_a_raising_function_is_named_with_the_sample():
    with pytest.raises(RewardFunctionError, match=r"fails_on_bad.*sample 1.*'bad'"):
        scorer("fails_on_bad").score(["p", "p"], ["good", "bad"], {})


def test_wrong_count_is_an_error():
    with pytest.raises(RewardFunctionError, match="returned 1 values for 2 completions"):
        scorer("wrong_count").score(["p", "p"], ["a", "b"], {})


def test_none_becomes_nan():
    values = scorer("some_none").score(["p", "p"], ["skip", "keep"], {})[f"{HERE}:some_none"]
    assert math.isnan(values[0]) and values[1] == 2.0


def test_an_infinite_reward_is_refused_with_the_sample():
    with pytest.raises(RewardFunctionError, match=r"infinite.*-inf for sample 1.*finite"):
        scorer("infinite").score(["p", "p"], ["a", "b"], {})


def test_unknown_builtin_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: bleu"):
        RewardScorer([{"name": "nope", "weight": 1.0}], 10.0)


def test_unimportable_path_is_named():
    with pytest.raises(ValueError, match="no_such_module:fn"):
        RewardScorer([{"name": "no_such_module:fn", "weight": 1.0}], 10.0)
