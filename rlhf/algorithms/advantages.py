"""Advantage estimators (spec §3, §4.2, §6). Pure tensor math; registered estimators adapt them to a batch.

Tensors are [B, T] with a 0/1 mask of the model's completion tokens; sequence-level rewards are [B] with groups of
`group_size` contiguous rows. NaN rewards (unscorable samples) are left out of group statistics, advantage 0.
In a multi-turn episode the mask has holes (the environment's tokens, 0): the token-level estimators (REINFORCE++,
GAE) run over each row's model tokens side by side (`on_model_tokens`), so the score sits on the last model token,
returns and GAE bootstrap from one model token to the next across the environment's, and the environment's tokens
get advantage 0.
"""

from dataclasses import dataclass

import torch

from rlhf.algorithms.losses import kl_estimate
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


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: each reward minus the mean of the OTHER scorable rewards of its group (spec §6.1)."""
    if group_size < 2:
        raise ValueError("RLOO needs a group size of at least 2 (the baseline leaves the sample out)")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.reshape(-1, group_size).to(torch.float64)
    valid = ~torch.isnan(grouped)
    values = torch.where(valid, grouped, torch.zeros_like(grouped))
    others = (valid.sum(-1, keepdim=True) - 1).clamp(min=1)
    baseline = (values.sum(-1, keepdim=True) - values) / others
    return torch.where(valid, grouped - baseline, torch.zeros_like(grouped)).reshape(-1).to(rewards.dtype)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation over token rewards (spec §4.2). Returns (advantages, returns).

    The value after a sequence's last token is 0; padded positions get 0 and pass nothing back.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def token_rewards(scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None,
                  kl_coef: float = 0.0) -> torch.Tensor:
    """Per-token rewards: -kl_coef * KL_t on every token, plus the sequence score on its last token (spec §4.1)."""
    mask = mask.to(torch.float32)
    rewards = torch.zeros_like(mask) if kl is None else -kl_coef * kl * mask
    lengths = mask.sum(-1).long()
    rows = torch.nonzero(lengths > 0).squeeze(-1)  # an empty completion has no token to carry its score
    scores = torch.nan_to_num(scores.to(rewards.dtype), nan=0.0)
    rewards[rows, lengths[rows] - 1] += scores[rows]
    return rewards


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = sum over s >= t of gamma^(s-t) r_s, within each sequence."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the valid tokens of the whole batch (unbiased variance)."""
    mask = mask.to(values.dtype)
    count = mask.sum()
    if count < 2:
        return torch.zeros_like(values)
    mean = (values * mask).sum() / count
    var = (((values - mean) * mask) ** 2).sum() / (count - 1)
    return (values - mean) * torch.rsqrt(var + eps) * mask


@dataclass
class AdvantageInputs:
    """What an advantage estimator may use."""

    experience: object  # rewards [B] (NaN: unscorable), mask [B, T], rollout_logp, ref_logp, values
    group_size: int
    cfg: object  # the estimator's config section (algo.estimator)
    kl_coef: float = 0.0  # the KL controller's current value, for estimators that put KL in the reward
    kl_estimator: str = "k1"  # algo.kl.reward_estimator


def turn_rewards(experience) -> torch.Tensor:
    """[B, T] an episode's per-turn rewards at each turn's last model token (zeros where none were given)."""
    turns = getattr(experience, "turn_rewards", None)
    return torch.zeros_like(experience.mask, dtype=torch.float32) if turns is None else turns


def episode_rewards(experience) -> torch.Tensor:
    """[B] what a sequence-level estimator sees: the reward plus the episode's per-turn rewards, summed."""
    return experience.rewards + turn_rewards(experience).sum(-1)


@ADVANTAGE_ESTIMATORS.register("group")
def group(inputs: AdvantageInputs) -> torch.Tensor:
    """Every token of a completion carries its sequence's group advantage (GRPO, Dr. GRPO)."""
    experience = inputs.experience
    adv = group_advantages(episode_rewards(experience), inputs.group_size, inputs.cfg.scale, inputs.cfg.eps)
    return adv[:, None] * experience.mask


@ADVANTAGE_ESTIMATORS.register("rloo", kl_in_reward=True)
def rloo(inputs: AdvantageInputs) -> torch.Tensor:
    """Leave-one-out baseline on the sequence reward minus kl_coef times the sequence's summed KL (TRL's RLOO)."""
    experience, kl = inputs.experience, kl_in_reward(inputs)
    rewards = episode_rewards(experience)
    rewards = rewards if kl is None else rewards - inputs.kl_coef * kl.sum(-1)
    return rloo_advantages(rewards, inputs.group_size)[:, None] * experience.mask


@ADVANTAGE_ESTIMATORS.register("reinforce_pp", kl_in_reward=True)
def reinforce_pp(inputs: AdvantageInputs) -> torch.Tensor:
    """REINFORCE++: returns of token rewards (score on the last token, -kl_coef KL on each), whitened over the batch."""
    return _reinforce_pp(inputs, inputs.experience.rewards)


@ADVANTAGE_ESTIMATORS.register("reinforce_pp_baseline", kl_in_reward=True)
def reinforce_pp_baseline(inputs: AdvantageInputs) -> torch.Tensor:
    """REINFORCE++-baseline: the group mean reward (per-turn rewards summed in) is subtracted first, then as
    REINFORCE++ (the per-turn rewards stay at their turns: the last token carries the rest)."""
    experience = inputs.experience
    turns = turn_rewards(experience).sum(-1)
    return _reinforce_pp(inputs, group_advantages(experience.rewards + turns, inputs.group_size, scale="none") - turns)


def _reinforce_pp(inputs: AdvantageInputs, scores: torch.Tensor) -> torch.Tensor:
    mask = scorable_mask(inputs.experience)  # an unscorable sequence takes no part in the whitening: advantage 0
    kl = kl_in_reward(inputs)

    def returns(mask, turns, kl=None):
        rewards = token_rewards(scores, mask, kl, inputs.kl_coef) + turns
        return masked_whiten(discounted_returns(rewards, mask, inputs.cfg.gamma), mask)

    return on_model_tokens(returns, mask, turn_rewards(inputs.experience), *([kl] if kl is not None else []))


def on_model_tokens(fn, mask: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
    """`fn(mask, *tensors)` over each row's mask-1 positions moved side by side to the left (in order), its result
    put back at those positions, 0 elsewhere. For a mask without holes this is `fn` itself."""
    count = int(mask.sum(-1).max().item()) if mask.numel() else 0
    if count == 0:
        return torch.zeros_like(mask, dtype=torch.float32)
    index = torch.argsort((mask == 0).to(torch.int8), dim=-1, stable=True)[:, :count]  # mask-1 positions first
    packed_mask = mask.gather(1, index)
    result = fn(packed_mask, *(t.gather(1, index) for t in tensors)) * packed_mask
    return torch.zeros_like(mask, dtype=result.dtype).scatter(1, index, result)


def scorable_mask(experience) -> torch.Tensor:
    """[B, T] the completion mask without the rows whose reward is NaN (unscorable)."""
    return experience.mask * ~torch.isnan(experience.rewards)[:, None]


def kl_in_reward(inputs: AdvantageInputs) -> torch.Tensor | None:
    """Per-token KL between the rollout policy and the reference, for algorithms that put KL in the reward."""
    if inputs.kl_coef == 0:
        return None
    experience = inputs.experience
    return kl_estimate(experience.rollout_logp, experience.ref_logp, inputs.kl_estimator) * experience.mask


@ADVANTAGE_ESTIMATORS.register("gae", kl_in_reward=True)
def gae_estimator(inputs: AdvantageInputs) -> torch.Tensor:
    """PPO: token rewards (score on the last token, -kl_coef KL on each) through GAE on the critic's values."""
    experience = inputs.experience
    if experience.values is None:
        raise ValueError("the gae advantage estimator needs a critic's values: set algo.critic.enabled=true")
    mask = scorable_mask(experience)  # an unscorable sequence: advantage 0 (its values pass nothing back)
    kl = kl_in_reward(inputs)

    def advantages(mask, values, turns, kl=None):
        rewards = token_rewards(experience.rewards, mask, kl, inputs.kl_coef) + turns  # per-turn rewards at their turn
        return gae(rewards, values, mask, inputs.cfg.gamma, inputs.cfg.lam)[0]

    return on_model_tokens(advantages, mask, experience.values, turn_rewards(experience),
                           *([kl] if kl is not None else []))
