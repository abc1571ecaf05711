import math

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


def needs_column(prompts, completions, answer, **_):
    return [float(c == a) for c, a in zip(completions, answer)]


HERE = __name__


def scorer(*names, weights=None):
    weights = weights or [1.0] * len(names)
    return RewardScorer([{"name": f"{HERE}:{n}", "weight": w} for n, w in zip(names, weights)])


def test_weighted_sum_and_per_function_values():
    result = scorer("always_one", "needs_column", weights=[0.5, 2.0]).score(
        ["p", "p"], ["7", "8"], {"answer": ["7", "7"]})
    assert result.per_function[f"{HERE}:needs_column"] == [1.0, 0.0]
    assert result.total == [2.5, 0.5]


def test_a_raising_function_is_named_with_the_sample():
    with pytest.raises(RewardFunctionError, match=r"fails_on_bad.*sample 1.*'bad'"):
        scorer("fails_on_bad").score(["p", "p"], ["good", "bad"], {})


def test_wrong_count_is_an_error():
    with pytest.raises(RewardFunctionError, match="returned 1 values for 2 completions"):
        scorer("wrong_count").score(["p", "p"], ["a", "b"], {})


def test_none_becomes_nan_in_the_total():
    result = scorer("some_none").score(["p", "p"], ["skip", "keep"], {})
    assert math.isnan(result.total[0]) and result.total[1] == 2.0


def test_unknown_builtin_lists_the_registered_ones():
    with pytest.raises(ValueError, match="registered: bleu"):
        RewardScorer([{"name": "nope", "weight": 1.0}])


def test_unimportable_path_is_named():
    with pytest.raises(ValueError, match="no_such_module:fn"):
        RewardScorer([{"name": "no_such_module:fn", "weight": 1.0}])
