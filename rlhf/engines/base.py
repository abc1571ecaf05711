"""The generation-engine contract: a rollout actor needs nothing from an engine beyond this."""

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass
class Sample:
    completion_ids: list[int]  # generated tokens, the stop token included when one was produced
    logprobs: list[float]  # the engine's logprob of each generated token (temperature applied)
    text: str  # decoded completion, without the stop token
    truncated: bool  # stopped by the token budget rather than by a stop token
    # rollout.mode=async: the weights version (pushes) that sampled each token; a partial rollout's tokens carry
    # the versions of the weights each part was sampled with (rlhf/rollout/stream.py). None elsewhere.
    versions: list[int] | None = None


@dataclass
class SamplingSettings:
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None  # prompt i's n samples use seeds seed + i*n ... (reproducible across restarts)
    ignore_eos: bool = False  # always generate max_new_tokens (the memory pre-flight's longest case)
    greedy: bool = False  # the most likely token each time (evaluation); temperature and top_p then unused


@dataclass
class EngineSettings:
    dtype: str  # auto (bf16 on a GPU, fp32 on the CPU) | float32 | bfloat16
    max_model_len: int
    kv_cache_gib: float  # CPU: vLLM's KV cache
    block_size: int
    gpu_memory_utilization: float  # GPU: vLLM's share of its GPU's memory
    sleep_mode: bool  # free GPU memory while the learner trains (vLLM sleep mode; CUDA only)
    weight_transfer: str | None  # "ipc" | "nccl": build the engine for that GPU route (vLLM's weight-transfer engine)
    tensor_parallel_size: int = 1  # GPUs one engine spans (vLLM runs a worker process per GPU)
    staging_dir: str = "/dev/shm"  # where a tensor-parallel engine stages weights that reach it from memory


class GenerationEngine(ABC):
    @abstractmethod
    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Sample]]:
        """`n` samples for each tokenized prompt, in prompt order."""

    @abstractmethod
    def load_weights(self, folder: str) -> None:
        """Replace the model's weights with the safetensors checkpoint in `folder` (full state dict)."""

    @abstractmethod
    def load_state(self, state: dict) -> None:
        """Replace the model's weights with a full state dict of CPU tensors (the object-store route)."""

    # For the GPU routes (cuda_ipc, nccl): a push is begin, one bucket after another, then finish. CUDA IPC loads a
    # bucket with load_bucket (vLLM's IPC wire format: names, dtype_names, shapes, tensor_sizes and {GPU UUID: IPC
    # handle} of one uint8 buffer holding the tensors back to back).
    def begin_weight_update(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no GPU weight routes; use rollout.weight_sync=shm")

    def load_bucket(self, bucket: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot load weights over CUDA IPC; use rollout.weight_sync=shm")

    def finish_weight_update(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no GPU weight routes; use rollout.weight_sync=shm")

    # For the NCCL route: join the group once (rank `rank` of `world`, the learner is rank 0), then per push
    # begin, one receive_bucket per bucket (names, dtype_names, shapes; the tensors arrive packed by broadcast), finish.
    def join_nccl(self, host: str, port: int, rank: int, world: int, bucket_bytes: int) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot join an NCCL weight group; use rollout.weight_sync=shm")

    def leave_nccl(self) -> None:
        """Leave the NCCL weight group (it is formed again when an engine restarted: a new process cannot join an old
        group)."""
        raise NotImplementedError(f"{type(self).__name__} cannot join an NCCL weight group; use rollout.weight_sync=shm")

    def receive_bucket(self, bucket: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot join an NCCL weight group; use rollout.weight_sync=shm")

    # Streaming (rollout.mode=async, rlhf/rollout/stream.py): requests of one sample each are added one by one and
    # the caller steps the engine, so requests join and leave the running batch at any time (continuous batching).
    def add_request(self, request_id: str, prompt: list[int], sampling: SamplingSettings) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot stream requests; rollout.mode=async needs "
                                  "rollout.engine=vllm")

    def step(self) -> list[tuple[str, Sample, bool]]:
        """One step of every running request: (request id, the tokens, logprobs and text this step added, whether it
        finished) for each. Only what the step added: the caller keeps the rest (a whole history at every step would
        make the host's work grow with the square of the length)."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream requests")

    def abort(self, request_ids: list[str]) -> None:
        """Drop running requests (what they sampled so far is the caller's, from `step`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream requests")

    def decode(self, token_ids: list[int]) -> str:
        """The text of a completion's tokens, special tokens left out (as the engine's own text)."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream requests")

    def close(self) -> None:
        """Release what outlives the process unless released (worker processes, shared memory)."""

    def sleep(self) -> None:
        """Release GPU memory (weights and KV cache) while the learner trains on the same device; every push that
        follows reloads all weights."""

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Take the memory back: `["weights"]` before a weight load, `["kv_cache"]` after it, None for both."""
