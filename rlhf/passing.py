"""When an evaluated completion passes (`eval/pass@k`): only where the objective defines passing.

`eval.pass_threshold` defines it for any objective; without it, a reward function may define its own (an attribute
`pass_threshold`: the built-in verifiers, whose reward is 1 for a right answer). An objective with neither (BLEU, a
length, a reward model) defines no passing: pass@k would be a number without meaning (BLEU is never 1), so none is
logged and the eval line says so."""

from dataclasses import dataclass

from rlhf.rewards.scoring import resolve_function


@dataclass(frozen=True)
class PassRule:
    objective: str  # the label whose reward decides
    threshold: float | None  # a completion passes when that reward is >= this; None: the objective defines no passing
    source: str  # where the threshold comes from, for the eval line

    def describe(self) -> str:
        if self.threshold is None:
            return f"no pass@k: {self.objective} defines no passing (eval.pass_threshold would set one)"
        return f"pass@k: {self.objective} >= {self.threshold:g} ({self.source})"


def pass_rule(cfg) -> PassRule:
    """The rule of `eval.pass_objective` (the first objective by default). A `checkpoint.keep_best` on a pass@k that
    would never be logged is refused here, before any actor starts."""
    e = cfg.eval
    objective = e.pass_objective or e.objective_labels(cfg.reward)[0]
    if e.pass_threshold is not None:
        rule = PassRule(objective, e.pass_threshold, "eval.pass_threshold")
    else:
        own = _own_threshold(objective, e.rewards or cfg.reward.functions)
        rule = PassRule(objective, own, "the reward's own threshold")
    best = cfg.checkpoint.keep_best
    if rule.threshold is None and best is not None and best.startswith("eval/pass@"):
        raise ValueError(f"checkpoint.keep_best={best!r}: the pass objective {objective!r} defines no passing, so no "
                         "pass@k is logged; set eval.pass_threshold, or keep the best of another eval metric")
    return rule


def _own_threshold(objective: str, functions) -> float | None:
    for spec in functions:
        if (spec.label or spec.name) == objective:
            return getattr(resolve_function(spec.name), "pass_threshold", None)
    return None  # a reward model's
