"""The generation-engine contract: a rollout actor needs nothing from an engine beyond this."""

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass
class Sample:
    completion_ids: list[int]  # generated tokens, the stop token included when one was produced
    logprobs: list[float]  # the engine's logprob of each generated token (temperature applied)
    text: str  # decoded completion, without the stop token
    truncated: bool  # stopped by the token budget rather than by a stop token


@dataclass
class SamplingSettings:
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None  # prompt i's n samples use seeds seed + i*n ... (reproducible across restarts)
    ignore_eos: bool = False  # always generate max_new_tokens (the memory pre-flight's longest case)


class GenerationEngine(ABC):
    @abstractmethod
    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Sample]]:
        """`n` samples for each tokenized prompt, in prompt order."""

    @abstractmethod
    def load_weights(self, folder: str) -> None:
        """Replace the model's weights with the safetensors checkpoint in `folder` (full state dict)."""

    # For the GPU weight-sync routes only (rollout.weight_sync=nccl|cuda_ipc):
    def load_tensors(self, weights: list) -> None:
        """Replace the model's weights with (name, tensor) pairs already on this process's device."""
        raise NotImplementedError(f"{type(self).__name__} cannot load tensors directly; use rollout.weight_sync=shm")

    def sleep(self) -> None:
        """Release generation memory (KV cache) while the learner trains on the same device."""

    def wake_up(self) -> None:
        """Take the memory back before generating or loading weights."""
