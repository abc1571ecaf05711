"""An SFT step as the driver runs it (algo=sft and a warm start alike): the step's demonstrations planned into
micro-batches, every learner rank's share trained, the shares summed into the step's figures."""

import ray

from actors.learner_group import LearnerGroup
from rlhf.sft.batching import BudgetError, plan_micro_batches
from rlhf.sft.data import Demonstrations, Sequences


def check_budget(cfg, *sets: Demonstrations | None) -> None:
    budget = cfg.train.max_tokens_per_micro_batch
    longest = max(d.longest() for d in sets if d is not None)
    if budget is not None and longest > budget:
        raise ValueError(f"train.max_tokens_per_micro_batch={budget} is below the longest demonstration ({longest} "
                         "tokens): raise it, or lower data.max_prompt_tokens and the completion budget")


def plan(sequences: Sequences, cfg) -> list:
    try:
        return plan_micro_batches(sequences.lengths, cfg.train.max_tokens_per_micro_batch, cfg.train.micro_batch_size,
                                  cfg.train.ranks)
    except BudgetError as err:  # checked at start-up: a demonstration cannot grow
        raise ValueError(str(err)) from err


def train(policy: LearnerGroup, sequences: Sequences, cfg) -> dict[str, float]:
    """One optimizer step of every rank on `sequences`; the step's metrics."""
    refs = policy.call("sft_step", ray.put(sequences), plan(sequences, cfg), sequences.targets, cfg.sft.packing)
    return step_metrics(LearnerGroup.reduce(ray.get(refs)))


def nll(policy: LearnerGroup, sequences: Sequences, cfg) -> float:
    """The mean cross-entropy of the targets of `sequences` under the current weights (eval/nll)."""
    parts = ray.get(policy.call("sft_nll", ray.put(sequences), plan(sequences, cfg), cfg.sft.packing))
    return sum(p["nll_sum"] for p in parts) / max(sum(p["nll_tokens"] for p in parts), 1)


def step_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The learners' sums as the step's figures: the padding share of the positions computed and tokens per second
    (real tokens, the prompts' too, over the slowest rank's time)."""
    positions = metrics.pop("sft/positions")
    metrics["sft/padding"] = 1 - metrics["sft/input_tokens"] / max(positions, 1)
    metrics["sft/tokens_per_s"] = metrics["sft/input_tokens"] / max(metrics["time/learner"], 1e-9)
    return metrics
