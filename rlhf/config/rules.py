"""The two shapes most checks take, so that every refusal of a choice or a sign reads the same."""

from rlhf.config.schema import Config


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {sorted(choices)}")


def _positive(key: str, value, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def _get(c: Config, dotted: str):
    for part in dotted.split("."):
        c = getattr(c, part)
    return c
