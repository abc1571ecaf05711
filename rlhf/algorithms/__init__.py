"""Pure RL math: advantages, policy losses, KL estimators, and the registries that name them."""

from rlhf.algorithms.advantages import group_advantages
from rlhf.algorithms.losses import aggregate_loss, clipped_policy_loss, kl_estimate
from rlhf.algorithms.registry import ADVANTAGE_ESTIMATORS, POLICY_LOSSES

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "POLICY_LOSSES",
    "aggregate_loss",
    "clipped_policy_loss",
    "group_advantages",
    "kl_estimate",
]
