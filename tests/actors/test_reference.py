"""The reference model sharded over two ZeRO-3 ranks scores like the plain one, holding half the weights each."""

import os

import pytest
import ray
import torch
from transformers import AutoTokenizer

from actors.reference import Reference, ReferenceActor
from test_weight_sync import SAMPLING, rollout_batch, start_rollout

pytestmark = pytest.mark.integration


def start_reference(model: str, ranks: int) -> Reference:
    env = {"OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": os.path.expanduser("~/.cache/rlhf/torch_extensions")}
    return Reference([
        ReferenceActor.options(num_cpus=0, runtime_env={"env_vars": env}).remote(model, 2, SAMPLING.temperature, ranks, False, "sdpa")
        for _ in range(ranks)
    ])


def test_sharded_reference_scores_like_the_whole_model(ray_cluster, tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rollout = start_rollout("hf", tiny_model)
    experience = rollout_batch(rollout, tokenizer)
    ray.kill(rollout)

    whole = start_reference(tiny_model, 1)
    expected = whole.collect(whole.logprobs(experience))
    (all_weights,) = ray.get([a.local_parameters.remote() for a in whole.actors])
    whole.kill()

    sharded = start_reference(tiny_model, 2)
    shares = ray.get(sharded.logprobs(experience))
    held = ray.get([a.local_parameters.remote() for a in sharded.actors])
    sharded.kill()

    assert [s.shape[0] for s in shares] == [experience.size // 2] * 2  # each rank scores its half of the batch
    torch.testing.assert_close(torch.cat(shares), expected, atol=1e-5, rtol=0)
    assert all(h <= all_weights / 2 + 1024 for h in held), (held, all_weights)  # ZeRO-3 pads shards slightly
