"""Data-parallel learner ranks over gloo: two ranks take the same optimizer step as one rank would."""

import os

import pytest
import ray
import torch
from transformers import AutoTokenizer

from actors.learner_group import LearnerGroup
from actors.placement import Placement, RoleDemand
from actors.policy import PolicyActor
from rlhf.config import compose_config, load_config
from test_weight_sync import SAMPLING, rollout_batch, start_rollout

pytestmark = pytest.mark.integration


def policy_group(model: str, ranks: int, zero_stage: int, batch_size: int = 8, *overrides: str) -> LearnerGroup:
    cfg = load_config(compose_config("experiment=smoke", f"train.zero_stage={zero_stage}", "train.lr=0.05",
                                     "algo.kl.beta=0", "train.micro_batch_size=2", f"train.ranks={ranks}",
                                     "output_dir=/tmp/unused", *overrides))
    env = {"OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": os.path.expanduser("~/.cache/rlhf/torch_extensions")}
    return LearnerGroup([
        PolicyActor.options(num_cpus=0, runtime_env={"env_vars": env}).remote(
            model, cfg.train, cfg.algo, batch_size, SAMPLING.max_new_tokens, SAMPLING.temperature, 0)
        for _ in range(ranks)
    ])


@pytest.mark.parametrize("zero_stage", [3])  # ZeRO-2 with two ranks runs in test_driver
def test_two_ranks_step_like_one_and_stay_identical(ray_cluster, tiny_model, zero_stage):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rollout = start_rollout("hf", tiny_model)
    experience = rollout_batch(rollout, tokenizer)
    probe = rollout_batch(rollout, tokenizer)
    ray.kill(rollout)

    single = policy_group(tiny_model, 1, zero_stage)
    one = LearnerGroup.reduce(ray.get(single.call("train_step", experience)))
    after_one = single.run("logprobs", probe)
    single.kill()

    pair = policy_group(tiny_model, 2, zero_stage)
    two = LearnerGroup.reduce(ray.get(pair.call("train_step", experience)))
    after_two = ray.get(pair.call("logprobs", probe))
    pair.kill()

    torch.testing.assert_close(after_two[0], after_two[1], atol=0, rtol=0)  # the ranks hold the same weights
    torch.testing.assert_close(after_two[0], after_one, atol=1e-5, rtol=0)  # ... and those of one rank
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)


def test_an_offloaded_optimizer_takes_the_same_step(ray_cluster, tiny_model):
    # ZeRO-Offload keeps the optimizer's fp32 partitions (and its step) in host memory: on a GPU that frees room for
    # a colocated engine; here, on the CPU, it checks that DeepSpeed takes the client AdamW on the offloaded state
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rollout = start_rollout("hf", tiny_model)
    experience, probe = rollout_batch(rollout, tokenizer), rollout_batch(rollout, tokenizer)
    ray.kill(rollout)
    after = []
    for offload in (False, True):
        group = policy_group(tiny_model, 1, 1, 8, f"train.offload_optimizer={str(offload).lower()}")
        group.run("train_step", experience)
        after.append(group.run("logprobs", probe))
        group.kill()
    assert (after[0] - probe.rollout_logp).abs().max() > 1e-3  # the step moved the weights
    torch.testing.assert_close(after[1], after[0], atol=1e-5, rtol=0)


def test_a_placement_that_cannot_fit_says_what_it_needs(ray_cluster):
    with pytest.raises(RuntimeError, match=r"needs .*'policy': '4 x 1 CPU'.*cluster has 2"):
        Placement("split", {"policy": RoleDemand(4, 1)}, timeout_s=2)


def test_reduce_sums_shares_keeps_replicated_values_and_takes_the_slowest_rank_time():
    ranks = [{"loss": 0.25, "grad_norm": 2.0, "time/old_logprobs": 0.5},
             {"loss": 0.5, "grad_norm": 2.0, "time/old_logprobs": 0.75}]
    assert LearnerGroup.reduce(ranks) == {"loss": 0.75, "grad_norm": 2.0, "time/old_logprobs": 0.75}
