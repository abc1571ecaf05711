"""CISPO (MiniMax-M1, 2025): clip the importance-sampling weight, not the update. Each token's loss is
-sg[clip(r, 1-eps_low, 1+eps_high)] * A * log pi_theta(y_t), r = pi_theta / pi_old: every token keeps its
gradient (PPO's clip drops the clipped tokens'), only its weight is bounded. The paper sets no lower bound
(eps_low large) and tunes eps_high; it aggregates over all tokens of the batch (`loss_aggregation: token-mean`)."""

import torch

from rlhf.algorithms.losses import LossInputs, LossOutput, log_ratio
from rlhf.algorithms.registry import POLICY_LOSSES


def cispo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, eps_low: float,
               eps_high: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token CISPO losses, the clipped (stop-gradient) IS weights, and the ratios before the clip."""
    ratio = torch.exp(log_ratio(logp.detach(), old_logp))
    weight = ratio.clamp(1 - eps_low, 1 + eps_high)
    return -weight * advantages * logp, weight, ratio


@POLICY_LOSSES.register("cispo")
def cispo(inputs: LossInputs) -> LossOutput:
    cfg = inputs.cfg
    losses, weight, ratio = cispo_loss(inputs.logp, inputs.ratio_denominator(), inputs.advantages,
                                       cfg.clip_eps_low, cfg.clip_eps_high)
    # a clipped weight equals its bound exactly (clamp returns it)
    clipped = (weight == 1 - cfg.clip_eps_low) | (weight == 1 + cfg.clip_eps_high)
    return LossOutput(losses, {"clip_fraction": clipped.float(), "is_weight": weight, "ratio": ratio},
                      extremes=("ratio",))
