"""Hosts one DeepSpeed rank of the critic."""

import ray

from actors.policy import join_process_group
from rlhf.experience import Experience


@ray.remote
class CriticActor:
    def __init__(self, model_path: str, critic_cfg, algo_cfg, batch_size: int, seed: int, heads: int):
        join_process_group()
        from rlhf.training.critic import CriticLearner

        self.learner = CriticLearner(model_path, critic_cfg, algo_cfg, batch_size, seed, heads)

    def values(self, experience: Experience):
        return self.learner.values(experience)

    def train_step(self, experience: Experience) -> dict[str, float]:
        return self.learner.train_step(experience)

    def save_checkpoint(self, folder: str) -> None:
        self.learner.save_checkpoint(folder)

    def load_checkpoint(self, folder: str) -> None:
        self.learner.load_checkpoint(folder)
