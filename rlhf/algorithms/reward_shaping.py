"""Reward normalisation with running statistics (PPO-max, spec §4.4) and KL-coefficient controllers (§4.1)."""

import torch


class RunningMoments:
    """Mean and variance of every reward seen so far, merged batch by batch (Chan et al.)."""

    def __init__(self):
        self.mean, self.m2, self.count = 0.0, 0.0, 0

    def update(self, values: torch.Tensor) -> None:
        values = values[~torch.isnan(values)].double()
        n = values.numel()
        if n == 0:
            return
        batch_mean = values.mean().item()
        batch_m2 = ((values - batch_mean) ** 2).sum().item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """Unbiased (ddof 1); 1.0 until two values have been seen."""
        return (self.m2 / (self.count - 1)) ** 0.5 if self.count > 1 else 1.0

    def state_dict(self) -> dict:
        return {"mean": self.mean, "m2": self.m2, "count": self.count}


def normalize_rewards(rewards: torch.Tensor, moments: RunningMoments, clip: float | None) -> torch.Tensor:
    """Update the running statistics with this batch first, then (r - mean) / std, clipped to +-clip."""
    moments.update(rewards)
    normalised = (rewards - moments.mean) / max(moments.std, 1e-8)
    return normalised.clamp(-clip, clip) if clip is not None else normalised


class KLController:
    """Fixed coefficient when `target` is None; otherwise Ziegler et al.'s adaptive rule:
    e = clip(KL / target - 1, -0.2, 0.2), beta <- beta * (1 + e * n_steps / horizon)."""

    def __init__(self, init: float, target: float | None = None, horizon: int = 10000):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        if self.target is None:
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
