"""Reward functions for tests, importable by path from the reward actor (tests/ is on its PYTHONPATH)."""

calls = {"n": 0}


def explode_on_second_call(prompts, completions, boom=False, **_):
    calls["n"] += 1
    if boom and calls["n"] > 1:
        raise RuntimeError("reward server unreachable")
    return [0.0] * len(completions)


def overflow_from_call(prompts, completions, call=3, **_):
    """From the `call`-th call on: rewards of +-3e38, finite, but a sum over tokens of A x ratio overflows."""
    calls["n"] += 1
    if calls["n"] < call:
        return [float(i % 2) for i in range(len(completions))]
    return [3e38 if i % 2 else -3e38 for i in range(len(completions))]


def unscorable(prompts, completions, **_):
    """No sample can be scored (as a verifier whose answers never parse)."""
    return [None] * len(completions)


def no_kwargs(prompts, completions, references):
    """Written for exactly its columns: the start-up check names what else a call gives."""
    return [0.0] * len(completions)
