"""GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization"): the importance ratio and its clipping are
per sequence. s_i = exp(mean over the sequence's tokens of log(pi_theta / pi_old)); GSPO-token's per-token form
s_i,t = sg[s_i] * pi_theta(y_t) / sg[pi_theta(y_t)] has s_i's value and each token's gradient, so with the
sequence-mean aggregation (`loss_aggregation: grpo`) the gradient is the paper's
(1/G) sum_i s_i A_i (1/|y_i|) sum_t grad log pi_theta(y_t)."""

import torch

from rlhf.algorithms.losses import LossInputs, LossOutput, log_ratio
from rlhf.algorithms.registry import POLICY_LOSSES


def gspo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token GSPO-token losses -min(s A, clip(s, 1-eps_low, 1+eps_high) A), and each token's sequence ratio s."""
    mask = mask.to(logp.dtype)
    per_token = log_ratio(logp, old_logp) * mask
    sequence_log_ratio = per_token.sum(-1) / mask.sum(-1).clamp(min=1)
    ratio = torch.exp(sequence_log_ratio.detach())[:, None] * torch.exp(logp - logp.detach())
    losses = torch.maximum(-ratio * advantages, -ratio.clamp(1 - eps_low, 1 + eps_high) * advantages)
    return losses * mask, ratio.detach() * mask


@POLICY_LOSSES.register("gspo")
def gspo(inputs: LossInputs) -> LossOutput:
    cfg = inputs.cfg
    losses, ratio = gspo_loss(inputs.logp, inputs.ratio_denominator(), inputs.advantages, inputs.mask,
                              cfg.clip_eps_low, cfg.clip_eps_high)
    clipped = (ratio < 1 - cfg.clip_eps_low) | (ratio > 1 + cfg.clip_eps_high)  # whole sequences
    return LossOutput(losses, {"clip_fraction": clipped.float(), "sequence_ratio": ratio})
