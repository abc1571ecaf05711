"""A real engine for the agents' tests: the HF engine on the tiny model, in a Ray actor of its own."""

from types import SimpleNamespace

import pytest
import ray

from rlhf.engines.base import EngineSettings


@pytest.fixture(scope="module")
def engine(ray_cluster, tiny_model):
    from actors.rollout import RolloutActor

    settings = EngineSettings(dtype="auto", max_model_len=1024, kv_cache_gib=0.1, block_size=32,
                              gpu_memory_utilization=0.3, sleep_mode=False, weight_transfer=None)
    actor = RolloutActor.options(num_cpus=0).remote("hf", tiny_model, settings, 0)
    yield SimpleNamespace(rollouts=[actor])
    ray.kill(actor)
