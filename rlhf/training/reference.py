"""The frozen reference policy: scores completions, never trains."""

import torch

from rlhf.experience import Experience
from rlhf.training.logprobs import completion_logprobs


class ReferenceModel:
    def __init__(self, model_path: str, micro_batch_size: int, temperature: float):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.micro_batch_size, self.temperature = micro_batch_size, temperature

    @torch.no_grad()
    def logprobs(self, experience: Experience) -> torch.Tensor:
        return torch.cat([
            completion_logprobs(self.model, part.input_ids, part.attention_mask, part.completion_ids.shape[1],
                                self.temperature)
            for part in experience.split(self.micro_batch_size)
        ]) * experience.mask
