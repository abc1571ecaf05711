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


# TRL takes any sequence of numbers: a numpy array or a torch tensor of one value per completion is a reward vector
def numpy_values(prompts, completions, **_):
    import numpy as np

    return np.array([1.0 if c == "keep" else np.nan for c in completions], dtype=np.float32)


def tensor_values(prompts, completions, **_):
    import torch

    return torch.tensor([0.5 if c == "keep" else float("nan") for c in completions], dtype=torch.bfloat16)


def column_of_arrays(prompts, completions, **_):
    import numpy as np

    return np.ones((len(completions), 1))


@pytest.mark.parametrize("name", ["numpy_values", "tensor_values"])
def test_an_array_or_a_tensor_is_a_reward_vector_and_nan_stays_unscorable(name):
    values = scorer(name).score(["p", "p"], ["keep", "skip"], {})[f"{HERE}:{name}"]
    assert values[0] in (1.0, 0.5) and isinstance(values[0], float) and math.isnan(values[1])


def test_an_array_of_the_wrong_shape_is_refused_with_its_shape():
    with pytest.raises(RewardFunctionError, match=r"column_of_arrays.*shape \(2, 1\) for 2 completions"):
        scorer("column_of_arrays").score(["p", "p"], ["a", "b"], {})


# Signatures: checked at start-up against the keyword arguments every call gives (TRL's and the data's columns)
def no_kwargs(prompts, completions, answer):
    return [0.0] * len(completions)


def names_a_missing_column(prompts, completions, solution, **kwargs):
    return [0.0] * len(completions)


def takes_its_own(prompts, completions, answer, completion_ids, trainer_state, log_metric, log_extra, scale):
    return [0.0] * len(completions)


def sources(*functions):
    from types import SimpleNamespace

    return SimpleNamespace(functions=[SimpleNamespace(name=f"{HERE}:{name}", kwargs=kwargs)
                                      for name, kwargs in functions], models=[])


def test_a_function_without_kwargs_is_named_with_its_signature_and_what_a_call_gives():
    from rlhf.rewards.scoring import check_reward_sources

    with pytest.raises(ValueError) as raised:
        check_reward_sources(sources(("always_one", {}), ("no_kwargs", {})), ["references", "answer"], False)
    message = str(raised.value)
    assert message.startswith(f"reward.functions[1] ('{HERE}:no_kwargs'): its signature "
                              "no_kwargs(prompts, completions, answer) cannot take")
    assert "no **kwargs and no parameter named references, completion_ids, trainer_state, log_metric, log_extra" in message
    assert "TRL's prompts, completions, completion_ids, trainer_state, log_metric, log_extra" in message
    assert "the data's columns references, answer" in message and "add **kwargs" in message


def test_a_parameter_no_call_gives_is_named():
    from rlhf.rewards.scoring import check_reward_sources

    with pytest.raises(ValueError, match=r"no call gives its parameter solution \(a column of the data"):
        check_reward_sources(sources(("names_a_missing_column", {})), ["answer"], False)


def test_a_signature_that_takes_every_keyword_passes_and_environments_only_with_environments():
    from rlhf.rewards.scoring import check_reward_sources

    check_reward_sources(sources(("takes_its_own", {"scale": 2}), ("needs_column", {})), ["answer"], False)
    with pytest.raises(ValueError, match="no parameter named environments"):
        check_reward_sources(sources(("takes_its_own", {"scale": 2})), ["answer"], True)


def test_what_the_start_up_check_expects_is_what_a_call_gives():
    # the check's list of TRL's extras and the scorer's call must not drift apart: a function that names exactly the
    # keywords the check expects (no **kwargs) passes it and is then called without a TypeError
    from rlhf.rewards.scoring import TrainerState, check_reward_sources

    check_reward_sources(sources(("takes_its_own", {"scale": 2})), ["answer"], False)
    spec = {"name": f"{HERE}:takes_its_own", "weight": 1.0, "kwargs": {"scale": 2}}
    got = RewardScorer([spec], 10.0).score(["p"], ["a"], {"answer": ["a"]},
                                           {"completion_ids": [[1]], "trainer_state": TrainerState(0, 1)})
    assert got == {f"{HERE}:takes_its_own": [0.0]}
