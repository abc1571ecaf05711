"""Reward functions for tests, importable by path from the reward actor (tests/ is on its PYTHONPATH)."""

calls = {"n": 0}


def explode_on_second_call(prompts, completions, boom=False, **_):
    calls["n"] += 1
    if boom and calls["n"] > 1:
        raise RuntimeError("reward server unreachable")
    return [0.0] * len(completions)
