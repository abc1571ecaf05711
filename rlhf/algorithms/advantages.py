"""Advantage estimators (spec §3.1, §3.2). Pure tensor math; registered estimators adapt them to a batch."""

import torch

from rlhf.algorithms.registry import ADVANTAGE_ESTIMATORS

SCALES = ("std", "none")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "std", eps: float = 1e-4) -> torch.Tensor:
    """GRPO's outcome advantage: each reward minus its group's mean, divided by the group's std (ddof 1) + eps.

    `rewards` is [num_groups * group_size], groups contiguous. NaN rewards (unscorable samples) are left out of
    their group's statistics and get advantage 0. `scale="none"` is Dr. GRPO.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; choose one of {SCALES}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if group_size == 1 and scale == "std":
        raise ValueError("a group of one sample has no std: set a group size > 1 or advantage scale 'none'")
    grouped = rewards.reshape(-1, group_size).to(torch.float64)
    valid = ~torch.isnan(grouped)
    count = valid.sum(-1, keepdim=True)
    values = torch.where(valid, grouped, torch.zeros_like(grouped))
    mean = values.sum(-1, keepdim=True) / count.clamp(min=1)
    centred = torch.where(valid, grouped - mean, torch.zeros_like(grouped))
    if scale == "std":
        var = (centred**2).sum(-1, keepdim=True) / (count - 1).clamp(min=1)
        centred = centred / (var.sqrt() + eps)
    return centred.reshape(-1).to(rewards.dtype)


@ADVANTAGE_ESTIMATORS.register("group")
def group(experience, cfg) -> torch.Tensor:
    """Every token of a completion carries its sequence's group advantage (GRPO, Dr. GRPO)."""
    adv = group_advantages(experience.rewards, cfg.group_size, cfg.advantage_scale, cfg.advantage_eps)
    return adv[:, None] * experience.mask
