"""Rollout corrections (spec §11): the engine that sampled a batch is not exactly the policy the learner scores it
with (bf16 kernels on a GPU, a one-step lag, MoE routing), so each token's policy loss is reweighted or left out by
how far apart the two are. Pure tensor math; `policy_objective` composes it (`algo.correction`).

o_t: the learner's logprob of a sampled token under the weights the loss takes as old; q_t: the engine's.
d_t = o_t - q_t over the valid tokens. Levels: token r_t = exp(d_t); sequence R = exp(sum_t d_t), on every token of
the sequence; geometric G = exp(mean_t d_t). Modes:
- truncate (TIS): weight min(ratio, high), nothing left out;
- mask (MIS, rejection): tokens (or, at sequence level, whole sequences) whose ratio leaves [low, high] are left
  out, the others weighted by the ratio; at the geometric level (Geo-RS) whole sequences are kept or left out and
  the kept ones weigh 1;
- icepop: the token-level mask under IcePop's name and bounds (0.5, 5.0 in OpenRLHF's flags).
A token left out keeps its place in the loss's denominator with a loss of 0: the aggregation's counts are the
mini-batch's, fixed before its micro-batches run, so a step that leaves many tokens out is a smaller step.
"""

import torch

from rlhf.algorithms.losses import LOG_RATIO_CLAMP

LEVELS = ("token", "sequence", "geometric")
MODES = ("none", "truncate", "mask", "icepop")


def correction_log_ratio(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor,
                         level: str) -> torch.Tensor:
    """[B, T] log of the level's ratio on every token (0 on padding), detached, clamped to +-20 before any exp."""
    mask = mask.to(old_logp.dtype)
    diff = (old_logp - rollout_logp).detach() * mask
    if level == "token":
        log_ratio = diff
    elif level == "sequence":
        log_ratio = diff.sum(-1, keepdim=True).expand_as(diff)
    elif level == "geometric":
        log_ratio = (diff.sum(-1) / mask.sum(-1).clamp(min=1))[:, None].expand_as(diff)
    else:
        raise ValueError(f"unknown correction level {level!r}; choose one of {LEVELS}")
    return log_ratio.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP) * mask


def rollout_correction(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor, *, level: str,
                       mode: str, low: float | None = None, high: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, keep), both [B, T]: `weight` multiplies each token's policy loss (detached, 0 where `keep` is
    false); `keep` says which tokens take part. Padding: keep false, weight 0. `low=None`: no lower bound."""
    valid = mask.bool()
    ratio = torch.exp(correction_log_ratio(old_logp, rollout_logp, mask, level))
    if mode == "truncate":
        if high is None:
            raise ValueError("a truncating correction needs its cap (high)")
        keep, weight = valid, ratio.clamp(max=high)
    elif mode in ("mask", "icepop"):
        if mode == "icepop" and level != "token":
            raise ValueError(f"icepop is a token-level mask, not {level!r}")
        if high is None:
            raise ValueError(f"a {mode} correction needs its upper bound (high)")
        inside = ratio <= high
        if low is not None:
            inside &= ratio >= low
        keep = valid & inside
        weight = torch.ones_like(ratio) if level == "geometric" else ratio
    else:
        raise ValueError(f"unknown correction mode {mode!r}; choose one of {MODES}")
    return torch.where(keep, weight, torch.zeros_like(weight)), keep
