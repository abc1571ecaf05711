"""Hosts one DeepSpeed rank of the critic."""

import ray

from actors.learner_group import LearnerRank
from rlhf.console import capture_output
from rlhf.experience import Experience


@ray.remote
class CriticActor(LearnerRank):
    def __init__(self, model_path: str, critic_cfg, algo_cfg, batch_size: int, seed: int, heads: int):
        capture_output()  # into <output_dir>/logs/<role>-<index>.log (rlhf/console.py)
        self.args = (model_path, critic_cfg, algo_cfg, batch_size, seed, heads)

    def build(self, rank: int, world: int):
        from rlhf.training.critic import CriticLearner

        return CriticLearner(*self.args, rank=rank, world=world)

    def values(self, experience: Experience):
        return self.learner.values(experience)
