"""Runs the configured reward functions on CPU."""

import ray

from rlhf.rewards import RewardResult, RewardScorer


@ray.remote
class RewardActor:
    def __init__(self, functions: list[dict]):
        self.scorer = RewardScorer(functions)

    def score(self, prompts: list[str], completions: list[str], columns: dict[str, list]) -> RewardResult:
        return self.scorer.score(prompts, completions, columns)
