"""Hosts one generation engine."""

import ray

from rlhf.engines.base import Sample, SamplingSettings


@ray.remote
class RolloutActor:
    def __init__(self, engine: str, model_path: str, dtype: str, max_model_len: int, seed: int):
        if engine == "vllm":
            from rlhf.engines.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(model_path, dtype, max_model_len, seed)
        else:
            from rlhf.engines.hf_engine import HFEngine

            self.engine = HFEngine(model_path, dtype, seed)

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Sample]]:
        return self.engine.generate(prompts, n, sampling)

    def load_weights(self, folder: str) -> None:
        self.engine.load_weights(folder)
