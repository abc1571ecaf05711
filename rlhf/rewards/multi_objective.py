"""Combining several objectives: PAMA's closed-form weights (spec §1.4) and the LSC transform (spec §5).

Pure tensor math; `rlhf/rewards/aggregation.py` puts them to work.
"""

import torch


def pama_weights(objective_advantages: torch.Tensor) -> tuple[float, torch.Tensor]:
    """PAMA Theorem 1: the minimum over the simplex of |sum_i c_i A_i| for n scalar advantages, in O(n).

    Returns (s_star, c_star): s_star is 0 projected onto [min A, max A]; c_star one optimal weight vector.
    All positive: all weight on the smallest; all negative: on the largest (ties: lowest index); mixed signs:
    the two extremes weighted so that the sum is 0; all zero: uniform.
    """
    a = objective_advantages.double().flatten()
    if a.numel() == 0:
        raise ValueError("pama_weights needs at least one objective")
    weights = torch.zeros_like(a)
    lo, hi = int(torch.argmin(a)), int(torch.argmax(a))
    if (a == 0).all():
        return 0.0, torch.full_like(a, 1.0 / a.numel())
    if a[lo] > 0:
        weights[lo] = 1.0
        return a[lo].item(), weights
    if a[hi] < 0:
        weights[hi] = 1.0
        return a[hi].item(), weights
    if a[lo] == 0 or a[hi] == 0:  # an objective already at zero
        weights[lo if a[lo] == 0 else hi] = 1.0
        return 0.0, weights
    weights[lo] = a[hi] / (a[hi] - a[lo])
    weights[hi] = -a[lo] / (a[hi] - a[lo])
    return 0.0, weights


def lsc_transform(rewards: torch.Tensor, r_ref: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Log-sigmoid-centred utility summed over objectives: sum_k w_k log sigmoid(r_k - r_ref_k) (spec §5;
    weights default to 1, the paper's plain sum).

    `rewards` is [..., K] (K objectives), `r_ref` broadcasts to it. The result is < 0; 0 is the maximum.
    """
    utility = torch.nn.functional.logsigmoid(rewards - r_ref)  # stable: logsigmoid(-50) = -50, not -inf
    return (utility if weights is None else utility * weights.to(utility.dtype)).sum(-1)
