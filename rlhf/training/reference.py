"""The frozen reference policy: scores completions, never trains."""

import torch

from rlhf.experience import Experience
from rlhf.training.logprobs import batch_logprobs, completion_logprobs
from rlhf.training.memory import dummy_batch, peak_rss_gib, report


class ReferenceModel:
    def __init__(self, model_path: str, micro_batch_size: int, temperature: float):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.micro_batch_size, self.temperature = micro_batch_size, temperature

    def logprobs(self, experience: Experience) -> torch.Tensor:
        return batch_logprobs(self.model, experience, self.micro_batch_size, self.temperature)

    @torch.no_grad()
    def preflight(self, prompt_len: int, completion_len: int) -> dict:
        ids, mask = dummy_batch(self.model.config.vocab_size, self.micro_batch_size, prompt_len, completion_len)
        completion_logprobs(self.model, ids, mask, completion_len, self.temperature)
        return report("reference", peak_rss_gib())
