"""Name -> function registries, so a new algorithm is one function plus one `conf/algo/*.yaml`."""

from typing import Callable


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable] = {}

    def register(self, name: str, **traits) -> Callable[[Callable], Callable]:
        """`traits`: what the function declares of itself (e.g. `kl_in_reward=True`), read by the start-up checks."""
        def add(fn: Callable) -> Callable:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            for trait, value in traits.items():
                setattr(fn, trait, value)
            self._items[name] = fn
            return fn

        return add

    def get(self, name: str) -> Callable:
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)


# fn(AdvantageInputs) -> token advantages [B, T], see rlhf/algorithms/advantages.py; trait kl_in_reward: it
# subtracts the KL controller's coefficient x KL from the reward
ADVANTAGE_ESTIMATORS = Registry("advantage estimator")
# fn(LossInputs) -> LossOutput (per-token losses [B, T] and per-token metrics), see rlhf/algorithms/losses.py
POLICY_LOSSES = Registry("policy loss")
# fn(...) by stage, see rlhf/algorithms/transforms.py; traits stage, total_reward_only
BATCH_TRANSFORMS = Registry("batch transform")
