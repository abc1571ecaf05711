"""What the learner minimises: the configured policy loss with the corrections the config asks for, each a
function of `LossInputs` and the `LossOutput` so far: the rollout correction (`algo.correction`,
rlhf/algorithms/corrections.py), then the KL term (`algo.kl.beta`), which the correction leaves whole."""

import torch

from rlhf.algorithms.corrections import correction_log_ratio, rollout_correction
from rlhf.algorithms.losses import LossInputs, LossOutput, kl_estimate
from rlhf.algorithms.registry import POLICY_LOSSES


def rollout_corrected(inputs: LossInputs, output: LossOutput, correction) -> LossOutput:
    """Each token's loss x the rollout correction's weight (0 for the tokens it leaves out): the batch came from the
    engine, which may lag pi_old by a step (rollout.mode=one_step_off) or differ numerically (bf16 engines). Against
    pi_old, not the policy being trained: the loss's own ratio already covers pi_theta / pi_old."""
    weight, keep = rollout_correction(inputs.old_logp, inputs.rollout_logp, inputs.mask, level=correction.level,
                                      mode=correction.mode, low=correction.low, high=correction.high)
    valid = inputs.mask.bool()
    dropped = valid & ~keep
    ratio = torch.exp(correction_log_ratio(inputs.old_logp, inputs.rollout_logp, inputs.mask, correction.level))
    metrics = {**output.metrics, "correction/weight": weight, "correction/ratio": ratio,
               "correction/tokens_dropped": dropped.float()}
    sequences = {**output.sequence_metrics, "correction/sequences_dropped": dropped.any(-1).float()}
    return LossOutput(output.token_losses * weight, metrics, sequences, (*output.extremes, "correction/ratio"))


def kl_penalty(inputs: LossInputs, output: LossOutput, beta: float, estimator: str) -> LossOutput:
    """Add beta * KL(pi || pi_ref) per token (GRPO's loss term)."""
    kl = kl_estimate(inputs.logp, inputs.ref_logp, estimator)
    return LossOutput(output.token_losses + beta * kl, {**output.metrics, "kl": kl.detach()},
                      output.sequence_metrics, output.extremes)


def policy_objective(inputs: LossInputs, kl_beta: float = 0.0, kl_estimator: str = "k3",
                     correction=None) -> LossOutput:
    """The configured policy loss (`inputs.cfg.name`) with its corrections: the rollout correction (`correction`,
    the `algo.correction` section; none when None or mode none) and the KL term (algo.kl.beta, algo.kl.estimator),
    which it leaves whole. What the learner aggregates."""
    output = POLICY_LOSSES.get(inputs.cfg.name)(inputs)
    if correction is not None and correction.mode != "none":
        output = rollout_corrected(inputs, output, correction)
    if kl_beta > 0:
        output = kl_penalty(inputs, output, kl_beta, kl_estimator)
    return output


