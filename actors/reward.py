"""Runs the configured reward functions on CPU."""

import ray

from rlhf.console import capture_output
from rlhf.rewards import RewardScorer


@ray.remote
class RewardActor:
    def __init__(self, functions: list[dict], timeout_s: float):
        capture_output()  # into <output_dir>/logs/<role>-<index>.log (rlhf/console.py)
        self.scorer = RewardScorer(functions, timeout_s)

    def score(self, prompts: list, completions: list[str], columns: dict[str, list],
              extras: dict | None = None) -> dict[str, list[float]]:
        return self.scorer.score(prompts, completions, columns, extras)

    def drain_logs(self) -> tuple[dict[str, float], dict[str, list]]:
        return self.scorer.drain_logs()

    def preflight(self) -> dict:
        from rlhf.training.memory import peak_rss_gib, report

        return report("reward functions", peak_rss_gib())

    def ready(self) -> bool:
        return True
