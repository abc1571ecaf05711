"""The policy learner reports the time it spends on old logprobs (a phase of the issue-6 breakdown)."""

import os
from dataclasses import replace

import pytest
import torch

from rlhf.config import compose_config, load_config
from rlhf.experience import Experience
from rlhf.training.policy import PolicyLearner


def batch(vocab: int) -> Experience:
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(3, vocab, (1, 6), generator=g).repeat(4, 1)
    experience = Experience(prompt, torch.ones(4, 6, dtype=torch.long), torch.randint(3, vocab, (4, 5), generator=g),
                            torch.ones(4, 5), -torch.rand(4, 5, generator=g), torch.zeros(4, dtype=torch.bool))
    experience.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])[:, None].expand(4, 5).contiguous()
    return experience


@pytest.mark.parametrize("epochs", [1, 2])
def test_old_logprobs_are_timed_only_when_computed(tiny_model, monkeypatch, epochs):
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29561", "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    cfg = load_config(compose_config("experiment=smoke", "algo.kl.beta=0", f"algo.update.epochs={epochs}",
                                     "train.micro_batch_size=4", "output_dir=/tmp/unused"))
    from transformers import AutoConfig

    learner = PolicyLearner(tiny_model, cfg.train, cfg.algo, 4, 5, 1.0, 0)
    metrics = learner.train_step(batch(AutoConfig.from_pretrained(tiny_model).vocab_size))
    assert (metrics["time/old_logprobs"] > 0) == (epochs == 2)


def test_an_episodes_environment_tokens_carry_no_gradient(tiny_model, monkeypatch):
    # the same batch with the environment tokens' engine logprobs and advantages changed trains alike: they are
    # context (attended to), never trained on; changing a model token's advantage does change the step
    from transformers import AutoConfig

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29562", "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    cfg = load_config(compose_config("experiment=smoke", "algo.kl.beta=0", "train.lr=1e-12", "train.micro_batch_size=4",
                                     "output_dir=/tmp/unused"))
    learner = PolicyLearner(tiny_model, cfg.train, cfg.algo, 4, 5, 1.0, 0)
    experience = batch(AutoConfig.from_pretrained(tiny_model).vocab_size)
    environment = torch.tensor([[0.0, 1, 1, 0, 0]]).repeat(4, 1)  # tokens 1 and 2 of every row are the env's
    experience.mask, experience.context_mask = 1.0 - environment, environment

    def step(changed) -> dict:
        return learner.train_step(changed)

    base = step(experience)
    perturbed = replace(experience, rollout_logp=experience.rollout_logp + 3.0 * environment,
                        advantages=experience.advantages + 5.0 * environment)
    again = step(perturbed)
    assert again["loss"] == pytest.approx(base["loss"], abs=1e-7) and again["grad_norm"] == pytest.approx(base["grad_norm"], rel=1e-6)
    model_token = torch.zeros(4, 5)
    model_token[:, 0] = 1.0
    other = step(replace(experience, advantages=experience.advantages + 5.0 * model_token))
    assert other["grad_norm"] != pytest.approx(base["grad_norm"], rel=1e-3)


def test_bf16_computes_in_bf16_over_fp32_master_weights_and_adam_state(tiny_model, monkeypatch):
    # what train.bf16=true keeps on the CPU (rlhf/precision.py's docstring): the module in bf16, DeepSpeed's fp32
    # master copy of every weight, and fp32 Adam moments; a step moves the master weights
    from transformers import AutoConfig

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29563", "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    cfg = load_config(compose_config("experiment=smoke", "algo.kl.beta=0", "train.bf16=true", "train.zero_stage=1",
                                     "train.micro_batch_size=4", "output_dir=/tmp/unused"))
    learner = PolicyLearner(tiny_model, cfg.train, cfg.algo, 4, 5, 1.0, 0)
    engine = learner.engine
    assert {p.dtype for p in engine.module.parameters()} == {torch.bfloat16}
    masters = [p for group in engine.optimizer.fp32_groups_flat_partition for p in group] \
        if hasattr(engine.optimizer, "fp32_groups_flat_partition") else engine.optimizer.single_partition_of_fp32_groups
    assert masters and {m.dtype for m in masters} == {torch.float32}
    before = [m.detach().clone() for m in masters]
    learner.train_step(batch(AutoConfig.from_pretrained(tiny_model).vocab_size))
    states = [s for s in engine.optimizer.optimizer.state.values()]
    assert states and {v.dtype for s in states for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")} == {torch.float32}
    assert any(not torch.equal(a, b) for a, b in zip(before, masters))


@pytest.mark.parametrize("stage", [0, 1])
def test_bf16_master_weights_start_off_the_bf16_grid(tiny_model, monkeypatch, stage):
    # DeepSpeed copies its masters from the bf16 module: every master would sit on the bf16 grid and a weight would
    # move only once its updates reached half a bf16 step (the default experiment's policy drifted 5-10x slower than
    # in fp32). The masters are the loaded values, those on the grid dithered (FP16_UnfusedOptimizer's per-param masters
    # at stage 0, ZeRO's partitions at 1); the module computes with the same bf16 weights
    from deepspeed.utils import safe_get_full_fp32_param
    from transformers import AutoModelForCausalLM

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29565", "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    cfg = load_config(compose_config("experiment=smoke", "algo.kl.beta=0", "train.bf16=true",
                                     f"train.zero_stage={stage}", "train.micro_batch_size=4", "output_dir=/tmp/unused"))
    loaded = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    engine = PolicyLearner(tiny_model, cfg.train, cfg.algo, 4, 5, 1.0, 0).engine
    masters = {}
    if stage == 0:  # FP16_UnfusedOptimizer over bf16: one fp32 master per param
        for group, params in zip(engine.optimizer.fp32_groups, engine.optimizer.fp16_groups):
            masters.update(zip(map(id, params), group))
    off_grid = on_grid = 0
    for name, param in engine.module.named_parameters():
        master = (masters[id(param)] if stage == 0 else safe_get_full_fp32_param(param))
        assert param.dtype == torch.bfloat16 and master.dtype == torch.float32, name
        assert torch.equal(param, master.bfloat16()), name  # the module computes with the masters' rounding
        value = loaded[name]
        exact = (value == value.bfloat16().float()) & (value != 0)
        assert torch.equal(master[~exact], value[~exact]), name  # off the grid: the loaded values themselves
        if exact.any():  # on it: moved within half a step (by less than fp32 can tell in one value of ~65000)
            assert (master[exact] != value[exact]).float().mean() > 0.99, name
        off_grid, on_grid = off_grid + int((~exact).sum()), on_grid + int(exact.sum())
    assert off_grid > 0 and on_grid > 0  # a tiny random model: fp32 matrices, RMSNorm weights of 1.0


def test_a_bf16_learner_resumes_exactly_its_fp32_master_weights_included(tiny_model, monkeypatch, tmp_path):
    # a resume that rebuilt the fp32 master copy from the bf16 module would lose the updates smaller than bf16's
    # resolution and drift from the run it continues: the checkpoint carries the masters and Adam's moments
    from transformers import AutoConfig

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29564", "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    cfg = load_config(compose_config("experiment=smoke", "algo.kl.beta=0", "train.bf16=true", "train.lr=1e-4",
                                     "train.micro_batch_size=4", "output_dir=/tmp/unused"))
    experience = batch(AutoConfig.from_pretrained(tiny_model).vocab_size)
    first = PolicyLearner(tiny_model, cfg.train, cfg.algo, 4, 5, 1.0, 0)
    first.train_step(experience)
    first.save_checkpoint(str(tmp_path / "policy"))
    resumed = PolicyLearner(tiny_model, cfg.train, cfg.algo, 4, 5, 1.0, 0)
    resumed.load_checkpoint(str(tmp_path / "policy"))
    def untimed(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if not k.startswith("time/")}

    for _ in range(2):  # bit-identical: every metric
        assert untimed(first.train_step(experience)) == untimed(resumed.train_step(experience))
    for (name, a), b in zip(first.engine.module.state_dict().items(), resumed.engine.module.state_dict().values()):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b), name


@pytest.mark.parametrize("stage", [2, 3])
def test_a_zero3_learner_loads_straight_into_its_shards(tiny_model, monkeypatch, stage):
    # under ZeRO-3 from_pretrained runs while HfDeepSpeedConfig lives (zero.Init: no rank holds the whole fp32 model,
    # as the reference loads); recorded at the call, then the load stops there
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification
    from transformers.integrations import is_deepspeed_zero3_enabled

    from rlhf.training.critic import CriticLearner

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29564", "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    seen = []

    class Loaded(Exception):
        pass

    def record(*args, **kwargs):
        seen.append(is_deepspeed_zero3_enabled())
        raise Loaded

    for auto in (AutoModelForCausalLM, AutoModelForTokenClassification):
        monkeypatch.setattr(auto, "from_pretrained", record)
    cfg = load_config(compose_config("experiment=smoke", "algo=ppo", f"train.zero_stage={stage}",
                                     f"critic.zero_stage={stage}", "output_dir=/tmp/unused"))
    with pytest.raises(Loaded):
        PolicyLearner(tiny_model, cfg.train, cfg.algo, 4, 5, 1.0, 0)
    with pytest.raises(Loaded):
        CriticLearner(tiny_model, cfg.critic, cfg.algo, 4, 0)
    assert seen == [stage == 3] * 2 and not is_deepspeed_zero3_enabled()  # and it is over once loaded


def test_the_memory_pre_flight_takes_a_pushs_gather_too(tiny_model, monkeypatch):
    # the push's peak (under ZeRO-3 a gathered copy of the whole model on every rank) is part of what is measured
    import rlhf.training.policy as policy

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29565", "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    cfg = load_config(compose_config("experiment=smoke", "train.micro_batch_size=4", "output_dir=/tmp/unused"))
    learner = PolicyLearner(tiny_model, cfg.train, cfg.algo, 4, 5, 1.0, 0)
    gathered = []
    real = policy.full_state_dict
    monkeypatch.setattr(policy, "full_state_dict", lambda engine: gathered.append(engine) or real(engine))
    report = learner.preflight(8, 5)
    assert gathered == [learner.engine] and report["peak_gib"] > 0
