"""Per-token policy losses, KL estimators and loss aggregation (spec §0, §3, §4.5). Pure tensor math.

The loss contract: a registered policy loss takes one `LossInputs` and returns a `LossOutput`, its per-token
losses and its metrics (per-token values the learner averages over the valid tokens).
`rlhf/algorithms/objective.py::policy_objective` adds the corrections the config asks for; the learner calls only
that.
"""

from dataclasses import dataclass, field

import torch

from rlhf.algorithms.registry import POLICY_LOSSES

AGGREGATION_MODES = ("grpo", "token-mean", "dr_grpo", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
LOG_RATIO_CLAMP = 20.0  # exp() of a log-ratio past this overflows float32 (verl clamps the same way)


def log_ratio(logp: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    return (logp - base).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman's k1, k2, k3)."""
    ref_ratio = log_ratio(ref_logp, logp)  # log(pi_ref / pi)
    if kind == "k1":
        return -ref_ratio
    if kind == "k2":
        return 0.5 * ref_ratio**2
    if kind == "k3":
        return torch.exp(ref_ratio) - ref_ratio - 1.0
    raise ValueError(f"unknown KL estimator {kind!r}; choose one of {KL_ESTIMATORS}")


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
) -> torch.Tensor:
    """PPO's clipped surrogate as a per-token loss: -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A).

    With `dual_clip = c` (> 1), tokens with A < 0 are further bounded by -c A (verl's dual-clip).
    """
    return clipped_surrogate(torch.exp(log_ratio(logp, old_logp)), advantages, eps_low, eps_high, dual_clip)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float,
                      dual_clip: float | None = None) -> torch.Tensor:
    """`clipped_policy_loss` from the ratio rho itself."""
    loss = torch.maximum(-ratio * advantages, -ratio.clamp(1 - eps_low, 1 + eps_high) * advantages)
    if dual_clip is not None:
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
    return loss


def aggregate_loss(
    token_losses: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    num_sequences: int | None = None,
    num_tokens: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """Reduce [B, T] token losses to a scalar (the table in spec §0).

    The keyword counts describe the whole optimizer batch. A learner that splits a batch into micro-batches
    passes the whole batch's counts, so the micro-batch losses add up to the whole batch's loss.
    - grpo: mean over sequences of each sequence's token mean
    - token-mean: sum over tokens / number of valid tokens (TRL bnpo; DAPO when counts are global)
    - dr_grpo: sum / (B * max_len) (TRL); seq-mean-token-sum-norm: sum / max_len (verl, no division by B)
    """
    mask = mask.to(token_losses.dtype)
    summed = token_losses * mask
    batch = num_sequences if num_sequences is not None else token_losses.shape[0]
    length = max_len if max_len is not None else token_losses.shape[1]
    if mode == "grpo":
        per_sequence = summed.sum(-1) / mask.sum(-1).clamp(min=1)
        return per_sequence.sum() / batch
    if mode == "token-mean":
        tokens = num_tokens if num_tokens is not None else mask.sum()
        return summed.sum() / max(float(tokens), 1.0)
    if mode == "dr_grpo":
        return summed.sum() / (batch * length)
    if mode == "seq-mean-token-sum-norm":
        return summed.sum() / length
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {AGGREGATION_MODES}")


@dataclass
class LossInputs:
    """What a policy loss may use; every tensor [B, T] over completion tokens."""

    logp: torch.Tensor  # the policy being trained (carries the gradient)
    old_logp: torch.Tensor  # pi_old, the learner's policy when the batch was sampled (logp.detach() on-policy)
    rollout_logp: torch.Tensor  # the engine's, which may lag pi_old (one-step-off-policy) or differ numerically
    ref_logp: torch.Tensor | None  # the reference model's (None when no reference runs)
    advantages: torch.Tensor
    mask: torch.Tensor  # 1 on real completion tokens
    cfg: object  # the loss's config section (algo.loss)

    def ratio_denominator(self) -> torch.Tensor:
        """What the importance ratio is taken against: pi_old, or the reference under `ratio_against=reference`
        (PAMA as re-implemented by ctwa, UNVERIFIED)."""
        if self.cfg.ratio_against == "reference":
            return self.ref_logp
        return self.old_logp


@dataclass
class LossOutput:
    token_losses: torch.Tensor  # [B, T]
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> per-token values [B, T]
    sequence_metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> per-sequence values [B]
    extremes: tuple[str, ...] = ()  # metrics whose max and min over the valid tokens are logged too (name_max, _min)


@POLICY_LOSSES.register("clipped")
def clipped(inputs: LossInputs) -> LossOutput:
    """PPO's clipped surrogate per token (GRPO, DAPO, PPO, RLOO, REINFORCE++)."""
    cfg = inputs.cfg
    ratio = torch.exp(log_ratio(inputs.logp, inputs.ratio_denominator()))
    losses = clipped_surrogate(ratio, inputs.advantages, cfg.clip_eps_low, cfg.clip_eps_high, cfg.dual_clip)
    ratio = ratio.detach()
    clipped_tokens = (ratio < 1 - cfg.clip_eps_low) | (ratio > 1 + cfg.clip_eps_high)
    return LossOutput(losses, {"clip_fraction": clipped_tokens.float(), "ratio": ratio}, extremes=("ratio",))


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float | None) -> torch.Tensor:
    """Per-token 0.5 * max((V - R)^2, (clip(V, V_old +- clip) - R)^2) (spec §4.3); no clipping when clip is None."""
    loss = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (clipped - returns) ** 2)
    return 0.5 * loss
