"""Hosts one DeepSpeed rank of the policy learner."""

import os
import socket

import ray

from rlhf.experience import Experience


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_process_group() -> None:
    """A single rank forms its own process group; several ranks would share MASTER_ADDR/PORT (issue 5)."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                       "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})


@ray.remote
class PolicyActor:
    def __init__(self, model_path: str, train_cfg, algo_cfg, batch_size: int, max_new_tokens: int,
                 temperature: float, seed: int):
        join_process_group()
        from rlhf.training.policy import PolicyLearner

        self.learner = PolicyLearner(model_path, train_cfg, algo_cfg, batch_size, max_new_tokens, temperature, seed)

    def train_step(self, experience: Experience) -> dict[str, float]:
        return self.learner.train_step(experience)

    def save_checkpoint(self, folder: str) -> None:
        self.learner.save_checkpoint(folder)

    def load_checkpoint(self, folder: str) -> None:
        self.learner.load_checkpoint(folder)

    def logprobs(self, experience: Experience):
        return self.learner.logprobs(experience)

    def save_weights(self, folder: str) -> str:
        return self.learner.save_weights(folder)

    def save_pretrained(self, folder: str, tokenizer_path: str) -> str:
        return self.learner.save_pretrained(folder, tokenizer_path)
