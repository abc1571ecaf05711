"""Batch transforms: the named steps between scoring and training that `algo.transforms` chooses, in its order
within each stage. Each registers with its stage, which fixes its signature:

- `rewards`: fn(rewards [B], context) -> rewards, before the advantage estimator;
- `advantages`: fn(advantages [B, T], mask [B, T], context) -> advantages, after it; under an aggregation that
  combines per-objective advantages (PAMA) each objective's own, before they are combined;
- `training`: fn(experience, context) -> [B] bool, the rows that take part in the loss (others are masked out).

A transform with `total_reward_only=True` works on the total reward, which a per-objective aggregation does not
train on: the start-up checks refuse that combination.
"""

from dataclasses import dataclass

import torch

from rlhf.algorithms.advantages import masked_whiten
from rlhf.algorithms.registry import BATCH_TRANSFORMS
from rlhf.algorithms.reward_shaping import RunningMoments, normalize_rewards

STAGES = ("rewards", "advantages", "training")


@dataclass
class TransformContext:
    algo: object  # the algorithm's config (a transform's options live there, e.g. reward_clip)
    reward_moments: RunningMoments  # running reward statistics, kept across steps and in checkpoints


@BATCH_TRANSFORMS.register("normalize_rewards", stage="rewards", total_reward_only=True)
def normalize_rewards_step(rewards: torch.Tensor, context: TransformContext) -> torch.Tensor:
    """PPO-max: rewards by running mean and std, clipped to +-algo.reward_clip."""
    return normalize_rewards(rewards, context.reward_moments, context.algo.reward_clip)


@BATCH_TRANSFORMS.register("whiten_advantages", stage="advantages")
def whiten_advantages(advantages: torch.Tensor, mask: torch.Tensor, context: TransformContext) -> torch.Tensor:
    return masked_whiten(advantages, mask)


@BATCH_TRANSFORMS.register("mask_truncated", stage="training")
def mask_truncated(experience, context: TransformContext) -> torch.Tensor:
    """DAPO's overlong filtering: completions cut off by the token budget take no part in the loss."""
    return ~experience.truncated


def transforms_by_stage(names: list[str]) -> dict[str, list]:
    """The configured transforms, each stage's in the configured order."""
    chosen = [BATCH_TRANSFORMS.get(name) for name in names]
    return {stage: [fn for fn in chosen if fn.stage == stage] for stage in STAGES}
