"""A step's sampled groups before they become tensors: prompt rows, their completions and rewards, kept
together so that whole groups can be dropped and topped up (DAPO's dynamic sampling)."""

from dataclasses import dataclass

import torch

from rlhf.data import PromptBatch
from rlhf.engines.base import Sample


def objective_matrix(per_objective: dict[str, list[float]], labels: list[str]) -> torch.Tensor:
    """[B, K]: each objective's rewards as a column, in the order of `labels`."""
    return torch.tensor([per_objective[label] for label in labels], dtype=torch.float32).T.reshape(-1, len(labels))


@dataclass
class RewardResult:
    """Rewards of a batch of samples, flat, group after group."""

    per_objective: dict[str, list[float]]  # one list per objective, in config order; NaN = unscorable
    total: list[float]  # what the advantage estimator sees: the aggregated objectives plus any shaping
    shaping: dict[str, list[float]]  # terms added to the total that are not objectives (DAPO's overlong)

    def task(self) -> list[float]:
        """The total without its shaping terms: what DAPO's dynamic-sampling filter tests (as verl does; a group
        whose task rewards are all equal teaches nothing, however its lengths' penalties differ)."""
        return [t - sum(terms) for t, *terms in zip(self.total, *self.shaping.values())]

    def objectives(self) -> torch.Tensor:
        """[B, K], objectives in config order."""
        return objective_matrix(self.per_objective, list(self.per_objective))

    def take(self, indices: list[int]) -> "RewardResult":
        pick = lambda table: {k: [v[i] for i in indices] for k, v in table.items()}  # noqa: E731
        return RewardResult(pick(self.per_objective), [self.total[i] for i in indices], pick(self.shaping))

    @staticmethod
    def concat(parts: list["RewardResult"]) -> "RewardResult":
        join = lambda tables: {k: [v for t in tables for v in t[k]] for k in tables[0]}  # noqa: E731
        return RewardResult(join([p.per_objective for p in parts]), [v for p in parts for v in p.total],
                            join([p.shaping for p in parts]))


@dataclass
class Groups:
    batch: PromptBatch
    samples: list[list[Sample]]  # samples[i] are the completions of prompt i
    rewards: RewardResult
    topped_up: int = 0  # trailing groups DAPO's sampler added uninformative: they take no part in the loss

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def completions(self) -> list[Sample]:
        return [sample for group in self.samples for sample in group]

    def take(self, indices) -> "Groups":
        """The groups at `indices`, in that order."""
        indices = list(indices)
        size = len(self.samples[0]) if self.samples else 0
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        return Groups(
            PromptBatch(pick(self.batch.rows), pick(self.batch.token_ids), pick(self.batch.texts)),
            pick(self.samples),
            self.rewards.take([i * size + j for i in indices for j in range(size)]),
        )

    @staticmethod
    def concat(parts: list["Groups"]) -> "Groups":
        return Groups(
            PromptBatch([r for p in parts for r in p.batch.rows], [t for p in parts for t in p.batch.token_ids],
                        [t for p in parts for t in p.batch.texts]),
            [g for p in parts for g in p.samples],
            RewardResult.concat([p.rewards for p in parts]),
        )
