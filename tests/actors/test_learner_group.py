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


def varied_batch(vocab: int):
    """8 sequences (2 prompts x 4) of 1 to 8 completion tokens: every aggregation mode weighs them differently."""
    from rlhf.experience import Experience

    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (2, 5), generator=g).repeat_interleave(4, 0)
    lengths = torch.tensor([8, 1, 5, 3, 2, 7, 4, 6])
    mask = (torch.arange(8)[None] < lengths[:, None]).float()
    experience = Experience(prompts, torch.ones_like(prompts), torch.randint(3, vocab, (8, 8), generator=g), mask,
                            -torch.rand(8, 8, generator=g) * mask, torch.zeros(8, dtype=torch.bool))
    experience.advantages = torch.randn(8, 1, generator=g).expand(8, 8) * mask
    return experience


def test_one_step_is_the_same_over_any_micro_batches_and_ranks_in_every_aggregation_mode(ray_cluster, tiny_model):
    # the loss of each micro-batch is its share of the mini-batch's (aggregate_loss with the mini-batch's counts)
    # and each rank's is scaled by the ranks (DeepSpeed averages their gradients): one optimizer step's gradient
    # must not depend on how the batch is cut. ZeRO-3, so the ranks shard the weights too
    from transformers import AutoConfig

    from rlhf.algorithms.losses import AGGREGATION_MODES

    experience = varied_batch(AutoConfig.from_pretrained(tiny_model).vocab_size)
    layouts = {(1, 8): None, (1, 2): None, (2, 4): None}  # (ranks, micro-batch size): 1 or 4 micro-batches, 2 ranks
    for ranks, micro in layouts:
        # a small step: AdamW turns float noise in a near-zero gradient into a step of the learning rate's size
        layouts[(ranks, micro)] = policy_group(tiny_model, ranks, 3, 8, f"train.micro_batch_size={micro}",
                                               "train.lr=1e-3")
    try:
        for mode in AGGREGATION_MODES:
            steps = {}
            for layout, group in layouts.items():
                ray.get([rank.__ray_call__.remote(lambda self, m: setattr(self.learner.algo.loss, "aggregation", m), mode)
                         for rank in group.ranks])
                steps[layout] = LearnerGroup.reduce(ray.get(group.call("train_step", experience)))
            one = steps[(1, 8)]
            for layout, metrics in steps.items():
                assert metrics["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4), (mode, layout)
                assert metrics["loss"] == pytest.approx(one["loss"], rel=1e-4, abs=1e-6), (mode, layout)
        # the same steps, so the same weights: every layout, and the ranks of each, hold what one rank does
        after = {layout: ray.get(group.call("logprobs", experience)) for layout, group in layouts.items()}
        for layout, per_rank in after.items():
            for rank_logp in per_rank:
                assert (rank_logp - after[(1, 8)][0]).abs().max() < 1e-5, (layout, (rank_logp - after[(1, 8)][0]).abs().max())
    finally:
        for group in layouts.values():
            group.kill()


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
