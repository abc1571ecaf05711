"""A step's sampled groups before they become tensors: prompt rows, their completions and rewards, kept
together so that whole groups can be dropped and topped up (DAPO's dynamic sampling)."""

from dataclasses import dataclass

from rlhf.data import PromptBatch
from rlhf.engines.base import Sample
from rlhf.rewards import RewardResult


@dataclass
class Groups:
    batch: PromptBatch
    samples: list[list[Sample]]  # samples[i] are the completions of prompt i
    rewards: RewardResult  # flat over samples, group after group

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def completions(self) -> list[Sample]:
        return [sample for group in self.samples for sample in group]

    def take(self, indices) -> "Groups":
        """The groups at `indices`, in that order."""
        indices = list(indices)
        size = len(self.samples[0]) if self.samples else 0
        flat = [i * size + j for i in indices for j in range(size)]
        pick = lambda values: [values[i] for i in indices]  # noqa: E731
        return Groups(
            PromptBatch(pick(self.batch.rows), pick(self.batch.token_ids), pick(self.batch.texts)),
            pick(self.samples),
            RewardResult({k: [v[i] for i in flat] for k, v in self.rewards.per_function.items()},
                         [self.rewards.total[i] for i in flat]),
        )

    @staticmethod
    def concat(parts: list["Groups"]) -> "Groups":
        return Groups(
            PromptBatch([r for p in parts for r in p.batch.rows], [t for p in parts for t in p.batch.token_ids],
                        [t for p in parts for t in p.batch.texts]),
            [g for p in parts for g in p.samples],
            RewardResult({k: [v for p in parts for v in p.rewards.per_function[k]] for k in parts[0].rewards.per_function},
                         [v for p in parts for v in p.rewards.total]),
        )
