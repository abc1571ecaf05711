"""How several objectives' rewards become the signal the policy learns from (spec §1, §5). Pure tensor math.

Each objective's reward travels on its own ([B, K], K objectives in config order). An aggregation is
registered by name and either
- combines the rewards into one [B] reward before the advantage estimator (weighted sum, normalise-then-sum,
  LSC), or
- combines ADVANTAGES: the driver runs the estimator once per objective and hands the [B, T, K] result to
  `combine_advantages` (PAMA). Its `combine_rewards` only gives the scalar that is logged.
"""

import torch

from rlhf.algorithms.advantages import group_advantages
from rlhf.algorithms.registry import Registry
from rlhf.rewards.multi_objective import lsc_transform, pama_weights

REWARD_AGGREGATIONS = Registry("reward aggregation")


class Aggregation:
    per_objective_advantages = False  # True: the estimator runs per objective; combine_advantages merges
    needs_reference_rewards = False  # True: r_ref per prompt from the initial policy's samples (LSC)

    def __init__(self, options):
        self.options = options  # the `reward` config

    def combine_rewards(self, objectives: torch.Tensor, weights: torch.Tensor, group_size: int,
                        r_ref: torch.Tensor | None) -> torch.Tensor:
        """[B, K] objective rewards -> [B]. NaN (unscorable) in any objective makes the sample's total NaN."""
        raise NotImplementedError

    def combine_advantages(self, objective_advantages: torch.Tensor, mask: torch.Tensor, ratio: torch.Tensor,
                           clip_eps_high: float) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError(f"{type(self).__name__} combines rewards, not advantages")


def weighted_sum(objectives: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear scalarisation: sum_k w_k r_k."""
    return (objectives * weights.to(objectives.dtype)).sum(-1)


def normalized_sum(objectives: torch.Tensor, weights: torch.Tensor, group_size: int, eps: float) -> torch.Tensor:
    """Each objective z-scored within its prompt's group (unbiased std + eps), then the weighted sum: objectives
    on different scales weigh what their weights say, not what their units say."""
    columns = []
    for k in range(objectives.shape[-1]):
        column = objectives[:, k]
        z = group_advantages(column, group_size, "std" if group_size > 1 else "none", eps)
        columns.append(torch.where(torch.isnan(column), column, z))
    return weighted_sum(torch.stack(columns, -1), weights)


def pama_advantages(objective_advantages: torch.Tensor, mask: torch.Tensor, ratio: torch.Tensor,
                    clip_eps_high: float, granularity: str = "batch", apply: str = "weights"):
    """PAMA (spec §1.3-1.4): Noon advantages (negatives clipped to 0), then the closed-form weighting.

    `objective_advantages` [B, T, K]; `ratio` [B, T] is u = pi / pi_ratio-policy of the sampled tokens (1 when
    the ratio is against the rollout policy, on-policy). I(A) = Noon A * 1[u <= 1 + eps_high].
    - granularity "batch": A^(k) = masked mean of I over the batch's tokens; one (s*, c*) for the batch;
      apply "weights": advantage_t = sum_k c*_k A_t^(k); apply "scalar": advantage_t = s* (ctwa).
    - granularity "token": (s*, c*) per token, advantage_t = s*_t (both apply modes coincide).
    Returns (advantages [B, T], metrics).
    """
    mask = mask.to(objective_advantages.dtype)
    noon = objective_advantages.clamp(min=0) * mask[..., None]
    useful = noon * (ratio <= 1 + clip_eps_high).to(noon.dtype)[..., None]
    if granularity == "token":
        # projection of 0 onto [min_k, max_k] per token; Noon values are >= 0, so this is the smallest
        lowest, highest = useful.amin(-1), useful.amax(-1)
        s_star = torch.maximum(lowest, torch.minimum(torch.zeros_like(highest), highest))
        return s_star * mask, {"pama/s_star": (s_star * mask).sum().item() / max(mask.sum().item(), 1.0)}
    if granularity != "batch":
        raise ValueError(f"unknown PAMA granularity {granularity!r}; choose batch or token")
    per_objective = useful.sum((0, 1)) / mask.sum().clamp(min=1)
    s_star, weights = pama_weights(per_objective)
    if apply == "scalar":
        advantages = s_star * mask
    elif apply == "weights":
        advantages = (noon * weights.to(noon.dtype)).sum(-1)
    else:
        raise ValueError(f"unknown PAMA apply mode {apply!r}; choose weights or scalar")
    metrics = {"pama/s_star": s_star, **{f"pama/weight_{k}": w for k, w in enumerate(weights.tolist())}}
    return advantages, metrics


@REWARD_AGGREGATIONS.register("weighted_sum")
class WeightedSum(Aggregation):
    def combine_rewards(self, objectives, weights, group_size, r_ref):
        return weighted_sum(objectives, weights)


@REWARD_AGGREGATIONS.register("normalized_sum")
class NormalizedSum(Aggregation):
    def combine_rewards(self, objectives, weights, group_size, r_ref):
        return normalized_sum(objectives, weights, group_size, self.options.normalize_eps)


@REWARD_AGGREGATIONS.register("lsc")
class LogSigmoidCentred(Aggregation):
    """sum_k w_k log sigmoid(r_k - r_ref_k(prompt)): the log-probability that the output is good on every
    objective (spec §5). r_ref per prompt comes from the initial policy's samples (`reward.lsc`)."""

    needs_reference_rewards = True

    def combine_rewards(self, objectives, weights, group_size, r_ref):
        if r_ref is None:
            raise ValueError("the lsc aggregation needs reference rewards per prompt (r_ref)")
        return lsc_transform(objectives, r_ref, weights)


@REWARD_AGGREGATIONS.register("pama")
class Pama(Aggregation):
    per_objective_advantages = True

    def combine_rewards(self, objectives, weights, group_size, r_ref):
        return weighted_sum(objectives, weights)  # logged only; the policy learns from combine_advantages

    def combine_advantages(self, objective_advantages, mask, ratio, clip_eps_high):
        return pama_advantages(objective_advantages, mask, ratio, clip_eps_high, self.options.pama.granularity,
                               self.options.pama.apply)


def reference_quantile(samples: torch.Tensor, quantile: float, estimator: str = "empirical") -> torch.Tensor:
    """r_ref from the initial policy's rewards [n, K] for one prompt: the `quantile` of each objective, either
    empirical (numpy's linear interpolation) or under a normal approximation (mean + z * population std)."""
    samples = samples[~torch.isnan(samples).any(-1)].double()
    if samples.shape[0] == 0:
        return torch.zeros(samples.shape[-1])  # nothing scorable: centre at 0 (spec §5 fallback)
    if estimator == "empirical":
        return torch.quantile(samples, quantile, dim=0).float()
    if estimator == "normal":
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(quantile, dtype=torch.float64))
        return (samples.mean(0) + z * samples.std(0, unbiased=False)).float()
    raise ValueError(f"unknown r_ref estimator {estimator!r}; choose empirical or normal")
