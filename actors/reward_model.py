"""Hosts one reward model (a sequence classifier) for one objective."""

import ray

from rlhf.console import capture_output
from rlhf.rewards.reward_model import RewardModel
from rlhf.training.memory import building


@ray.remote
class RewardModelActor:
    def __init__(self, path: str, batch_size: int, max_length: int, chat_template_kwargs: dict | None = None):
        capture_output()  # into <output_dir>/logs/<role>-<index>.log (rlhf/console.py)
        with building():
            self.model = RewardModel(path, batch_size, max_length, chat_template_kwargs)

    def score(self, prompts: list, completions: list[str]) -> list[float]:
        return self.model.score(prompts, completions)

    def preflight(self) -> dict:
        from rlhf.training.memory import peak_rss_gib, report

        return report("reward model", peak_rss_gib(), self.model.device)

    def ready(self) -> bool:
        return True
