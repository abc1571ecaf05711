"""Scores completions under the frozen reference model."""

import ray

from rlhf.experience import Experience
from rlhf.training.reference import ReferenceModel


@ray.remote
class ReferenceActor:
    def __init__(self, model_path: str, micro_batch_size: int, temperature: float):
        self.model = ReferenceModel(model_path, micro_batch_size, temperature)

    def logprobs(self, experience: Experience):
        return self.model.logprobs(experience)

    def preflight(self, prompt_len: int, completion_len: int) -> dict:
        return self.model.preflight(prompt_len, completion_len)

    def ready(self) -> bool:
        return True
