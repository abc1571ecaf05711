"""The frozen reference policy: scores completions, never trains."""

import torch

from rlhf.experience import Experience
from rlhf.training.logprobs import batch_logprobs


class ReferenceModel:
    def __init__(self, model_path: str, micro_batch_size: int, temperature: float):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.micro_batch_size, self.temperature = micro_batch_size, temperature

    def logprobs(self, experience: Experience) -> torch.Tensor:
        return batch_logprobs(self.model, experience, self.micro_batch_size, self.temperature)
