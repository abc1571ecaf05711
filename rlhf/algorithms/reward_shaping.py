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

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.m2, self.count = state["mean"], state["m2"], state["count"]


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


def soft_overlong_punishment(lengths: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's length penalty (spec §3.3): 0 up to max_len - buffer, then falling linearly to -factor at max_len,
    and -factor beyond. `lengths` are completion token counts."""
    if not 0 < buffer <= max_len:
        raise ValueError(f"overlong buffer {buffer} must be in (0, max_len={max_len}]")
    lengths = lengths.to(torch.float64)
    penalty = ((max_len - buffer) - lengths) / buffer
    return (penalty.clamp(min=-1.0, max=0.0) * factor).to(torch.float32)


def informative_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """DAPO's dynamic-sampling filter: True for each group whose scorable rewards are not all equal (population
    std > 0), and for groups of one sample (verl's rule). `rewards` is [num_groups * group_size], NaN = unscorable."""
    grouped = rewards.reshape(-1, group_size)
    if group_size == 1:
        return torch.ones(grouped.shape[0], dtype=torch.bool)
    valid = ~torch.isnan(grouped)
    highest = torch.where(valid, grouped, torch.full_like(grouped, -torch.inf)).amax(-1)
    lowest = torch.where(valid, grouped, torch.full_like(grouped, torch.inf)).amin(-1)
    return (valid.sum(-1) > 1) & (highest > lowest)
