"""Hosts one generation engine, and knows which weights it holds."""

import ray

from rlhf.engines.base import EngineSettings, Sample, SamplingSettings


class StaleWeightsError(RuntimeError):
    """The engine holds other weights than the driver expects (it was restarted after a crash)."""


@ray.remote
class RolloutActor:
    def __init__(self, engine: str, model_path: str, settings: EngineSettings, seed: int):
        if engine == "vllm":
            from rlhf.engines.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(model_path, settings, seed)
        else:
            from rlhf.engines.hf_engine import HFEngine

            self.engine = HFEngine(model_path, settings, seed)
        self.version = 0  # weight pushes received; 0 = the initial weights

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings,
                 version: int | None = None) -> list[list[Sample]]:
        """`version`: the oldest weights the caller accepts (None: any). A restarted actor is back at version 0;
        newer weights than asked for are fine (a push that overtook a one-step-off-policy rollout)."""
        if version is not None and self.version < version:
            raise StaleWeightsError(f"engine holds weights version {self.version}, the driver expects {version}")
        return self.engine.generate(prompts, n, sampling)

    def load_weights(self, folder: str, version: int | None = None) -> None:
        self.engine.load_weights(folder)
        self.version = self.version + 1 if version is None else version

    def load_state(self, exported: dict, version: int) -> None:
        """Object-store route: the learner's exported arrays (Ray fetches them to this node, read in place)."""
        from rlhf.training.weight_transfer import from_arrays

        self.engine.load_state(from_arrays(exported))
        self.version = version

    # CUDA-IPC route: begin, one load_bucket per bucket, finish (which sets the version)
    def begin_weight_update(self) -> None:
        self.engine.begin_weight_update()

    def load_bucket(self, bucket: dict) -> None:
        self.engine.load_bucket(bucket)

    def finish_weight_update(self, version: int) -> None:
        self.engine.finish_weight_update()
        self.version = version

    # NCCL route (UNTESTED: needs two GPUs): join once; per push begin, receive_bucket per bucket, finish
    def join_weight_group(self, host: str, port: int, rank: int, world: int, bucket_bytes: int) -> None:
        self.engine.join_nccl(host, port, rank, world, bucket_bytes)

    def receive_bucket(self, bucket: dict) -> None:
        self.engine.receive_bucket(bucket)

    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.engine.wake_up(tags)

    def device_info(self) -> dict:
        from rlhf.training.memory import device_info

        return device_info(self.engine.device)

    def preflight(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> dict:
        from rlhf.training.memory import peak_rss_gib, report

        self.engine.generate(prompts, n, sampling)
        # vLLM takes its share of the GPU up front (weights + KV cache), outside torch's allocator statistics
        planned = getattr(self.engine, "planned_gpu_fraction", None)
        return report("rollout", peak_rss_gib(), self.engine.device, gpu_planned_fraction=planned)

    def close(self) -> None:
        self.engine.close()

    def ready(self) -> bool:
        return True
