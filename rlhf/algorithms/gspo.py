"""GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization"): the importance ratio and its clipping are
per sequence. s_i = exp(mean over the sequence's tokens of log(pi_theta / pi_old)); GSPO-token's per-token form
s_i,t = sg[s_i] * pi_theta(y_t) / sg[pi_theta(y_t)] has s_i's value and each token's gradient, so with the
sequence-mean aggregation (`loss_aggregation: grpo`) the gradient is the paper's
(1/G) sum_i s_i A_i (1/|y_i|) sum_t grad log pi_theta(y_t)."""

import torch

from rlhf.algorithms.losses import LossInputs, LossOutput, clipped_surrogate
from rlhf.algorithms.registry import POLICY_LOSSES

SEQUENCE_LOG_RATIO_MAX = 10.0  # verl's bound on log s before exp (a per-token clamp would let long sequences drift)


def gspo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              eps_low: float, eps_high: float, dual_clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token GSPO-token losses -min(s A, clip(s, 1-eps_low, 1+eps_high) A), and each token's sequence ratio s.
    The log of s is bounded above at the sequence level (SEQUENCE_LOG_RATIO_MAX, as verl), not per token. With
    `dual_clip = c` (> 1) a sequence with A < 0 is further bounded by -c A, as the token-level dual clip."""
    mask = mask.to(logp.dtype)
    per_token = (logp - old_logp) * mask
    sequence_log_ratio = (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).clamp(max=SEQUENCE_LOG_RATIO_MAX)
    ratio = torch.exp(sequence_log_ratio.detach())[:, None] * torch.exp(logp - logp.detach())
    losses = clipped_surrogate(ratio, advantages, eps_low, eps_high, dual_clip)
    return losses * mask, ratio.detach() * mask


@POLICY_LOSSES.register("gspo")
def gspo(inputs: LossInputs) -> LossOutput:
    cfg = inputs.cfg
    losses, ratio = gspo_loss(inputs.logp, inputs.ratio_denominator(), inputs.advantages, inputs.mask,
                              cfg.clip_eps_low, cfg.clip_eps_high, cfg.dual_clip)
    clipped = (ratio < 1 - cfg.clip_eps_low) | (ratio > 1 + cfg.clip_eps_high)  # whole sequences
    return LossOutput(losses, {"clip_fraction": clipped.float(), "sequence_ratio": ratio}, extremes=("sequence_ratio",))
