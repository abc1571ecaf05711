"""Whether a reward function's signature takes the keyword arguments every call gives it, checked at start-up.

A function written for other arguments would otherwise fail at the first scoring as "raised TypeError on sample 0",
after the engines, the learner and a rollout. TRL's reward functions take `**kwargs` for this reason: TRL passes
every column of the data set and its own extras, and a function picks what it needs."""

import inspect

# What TRL 1.16's GRPOTrainer passes beside prompts, completions and the data's columns; RewardScorer passes the same
# (so a TRL reward function runs unchanged). `environments` only in a run with environments.
TRL_EXTRAS = ("completion_ids", "trainer_state", "log_metric", "log_extra")
ENVIRONMENT_EXTRAS = ("environments",)


def given_keywords(columns, kwargs, environments: bool) -> dict[str, str]:
    """Every keyword argument of a call -> where it comes from. `columns`: the data's (every row column but the
    prompt, plus `env_reward` in a run with environments); `kwargs`: the function's own (`reward.functions[i].kwargs`)."""
    given = {"prompts": "TRL", "completions": "TRL"}
    given.update({name: "column" for name in columns})
    given.update({name: "TRL" for name in (*TRL_EXTRAS, *(ENVIRONMENT_EXTRAS if environments else ()))})
    given.update({name: "kwargs" for name in kwargs})
    return given


def signature_problem(fn, given: dict[str, str]) -> str | None:
    """Why `fn` cannot be called with the keywords `given` (None: it can, or its signature cannot be read)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a readable signature: its first call will tell
        return None
    params = signature.parameters.values()
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [] if takes_any else [name for name in given if name not in named]
    missing = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.default is p.empty and p.name not in given]
    if not unknown and not missing:
        return None
    problems = []
    if unknown:
        problems.append(f"it takes no **kwargs and no parameter named {', '.join(unknown)}")
    if missing:
        problems.append(f"no call gives its parameter {', '.join(missing)} (a column of the data must have that name, "
                        "or the parameter a default)")
    name = getattr(fn, "__name__", type(fn).__name__)  # a callable object, a partial: its type's name
    return (f"its signature {name}{signature} cannot take the keyword "
            f"arguments of a call: {'; '.join(problems)}. Every call gives {_described(given)}; add **kwargs to its "
            "parameters (as TRL's reward functions have) and read the ones it needs")


def _described(given: dict[str, str]) -> str:
    groups = {"TRL": "TRL's", "column": "the data's columns", "kwargs": "its kwargs"}
    parts = []
    for source, title in groups.items():
        names = [name for name, where in given.items() if where == source]
        if names:
            parts.append(f"{title} {', '.join(names)}")
    return "; ".join(parts)
