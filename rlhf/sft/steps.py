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


def preflight_case(cfg, demos: Demonstrations, held_out: Demonstrations | None = None) -> tuple[int, int, int]:
    """The memory pre-flight's SFT micro-batch, (rows, length, targets of each row): the heaviest a step (or the
    held-out evaluation) can plan: rows of the longest demonstration, as many as the token budget holds (or
    train.micro_batch_size), at most a rank's share of a step's demonstrations (or of the held-out ones), each with
    as many targets as any demonstration has."""
    sets = [d for d in (demos, held_out) if d is not None]
    longest = max(d.longest() for d in sets)
    budget = cfg.train.max_tokens_per_micro_batch
    rows = budget // longest if budget is not None else cfg.train.micro_batch_size
    most = max(cfg.sft.batch_size, len(held_out) if held_out is not None else 0)  # one plan's demonstrations
    return max(1, min(rows, -(-most // cfg.train.ranks))), longest, max(d.most_targets() for d in sets)


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
