"""The SFT step on the policy learner's engine (in-process, one rank): its loss is the mean cross-entropy over every
target token of the step, whatever the micro-batches, and only the targets carry gradient."""

import os

import pytest
import torch

from rlhf.config import compose_config, load_config
from rlhf.sft.batching import plan_micro_batches
from rlhf.sft.data import Sequences
from rlhf.sft.learner import nll, train_step
from rlhf.training.policy import PolicyLearner


@pytest.fixture
def learner_factory(tiny_model, monkeypatch):
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29571", "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, os.environ.get(key, value))

    def make(lr=1e-12):
        cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "algo=sft", f"train.lr={lr}",
                                         "output_dir=/tmp/unused"))
        return PolicyLearner(tiny_model, cfg.train, cfg.algo, 2, 8, 1.0, 0)
    return make


def sequences(vocab: int) -> Sequences:
    g = torch.Generator().manual_seed(0)
    lengths, targets = [20, 7, 13, 3], [9, 1, 5, 2]
    ids = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
    masks = [[0] * (n - t) + [1] * t for n, t in zip(lengths, targets)]
    return Sequences(ids, masks)


def reference_loss(model, seqs: Sequences) -> float:
    """Cross-entropy of every target token given the tokens before it, averaged over all target tokens."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask in zip(seqs.ids, seqs.masks):
            logits = model(input_ids=torch.tensor([ids])).logits[0].float()
            for t in range(1, len(ids)):
                if mask[t]:
                    total += (torch.logsumexp(logits[t - 1], -1) - logits[t - 1, ids[t]]).item()
                    count += 1
    return total / count


def test_the_loss_is_the_token_mean_whatever_the_micro_batches(learner_factory, tiny_model):
    from transformers import AutoConfig, AutoModelForCausalLM

    vocab = AutoConfig.from_pretrained(tiny_model).vocab_size
    seqs = sequences(vocab)
    expected = reference_loss(AutoModelForCausalLM.from_pretrained(tiny_model), seqs)
    results = []
    for budget in (None, 40, 20):  # one micro-batch, then several
        learner = learner_factory()
        plan = plan_micro_batches(seqs.lengths, budget, 8, 1)
        assert len(plan[0]) == {None: 1, 40: 2, 20: 3}[budget]
        results.append(train_step(learner, seqs, plan, seqs.targets))
    for metrics in results:
        assert metrics["sft/loss"] == pytest.approx(expected, rel=1e-5)
        assert metrics["sft/tokens"] == 17 and metrics["sft/input_tokens"] == 43
        assert metrics["grad_norm"] == pytest.approx(results[0]["grad_norm"], rel=1e-4)
    # the held-out figure is the same cross-entropy
    learner = learner_factory()
    parts = nll(learner, seqs, plan_micro_batches(seqs.lengths, 20, 8, 1))
    assert parts["nll_sum"] / parts["nll_tokens"] == pytest.approx(expected, rel=1e-5)


def test_tokens_outside_the_targets_carry_no_gradient(learner_factory, tiny_model):
    """Changing a prompt token changes the context, not what is trained on; changing a target does."""
    from transformers import AutoConfig

    seqs = sequences(AutoConfig.from_pretrained(tiny_model).vocab_size)
    plan = plan_micro_batches(seqs.lengths, None, 8, 1)
    base = train_step(learner_factory(), seqs, plan, seqs.targets)
    # the same tokens with their masks cut to fewer targets: the loss is over those alone
    fewer = Sequences(seqs.ids, [[0] * (len(m) - 1) + [1] for m in seqs.masks])
    fewer_metrics = train_step(learner_factory(), fewer, plan, fewer.targets)
    assert fewer_metrics["sft/tokens"] == 4 and fewer_metrics["sft/loss"] != pytest.approx(base["sft/loss"])


def test_the_step_learns(learner_factory, tiny_model):
    from transformers import AutoConfig

    seqs = sequences(AutoConfig.from_pretrained(tiny_model).vocab_size)
    learner = learner_factory(lr=1e-2)
    plan = plan_micro_batches(seqs.lengths, 20, 8, 1)
    losses = [train_step(learner, seqs, plan, seqs.targets)["sft/loss"] for _ in range(8)]
    assert losses[-1] < losses[0] * 0.5, losses


def test_the_warm_start_pre_flight_holds_the_frozen_reference_through_the_rl_work(learner_factory, tiny_model,
                                                                                  monkeypatch, ray_cluster):
    """A warm-started RL run's policy rank: the heaviest SFT micro-batch (its rows, length and targets), then the RL
    pre-flight while the frozen copy of the warm-started policy is held, which is let go afterwards. (A pre-flight
    report names its Ray node: the suite's Ray instance, or Ray would start one of its own.)"""
    import rlhf.sft.learner as sft_learner

    learner = learner_factory()
    seen = {}
    real_sft, real_rl = sft_learner.learner_preflight, learner.preflight

    def sft_case(engine, forward, *args, **kwargs):
        def recorded(*inputs):
            logits = forward(*inputs)
            seen["logits"] = tuple(logits.shape)
            return logits

        return real_sft(engine, recorded, *args, **kwargs)

    def rl(prompt_len, completion_len):
        seen["frozen during RL"] = learner.frozen_reference is not None
        return real_rl(prompt_len, completion_len)

    monkeypatch.setattr(sft_learner, "learner_preflight", sft_case)
    monkeypatch.setattr(learner, "preflight", rl)
    report = sft_learner.warm_start_preflight(learner, 8, 5, (3, 20, 6), (tiny_model, False, "sdpa"))
    vocab = learner.engine.module.config.vocab_size
    assert seen == {"logits": (3, 6, vocab), "frozen during RL": True}
    assert report["frozen_reference"] and report["peak_gib"] > 0 and learner.frozen_reference is None
    # sft.reference=base: no copy held
    seen.clear()
    assert not sft_learner.warm_start_preflight(learner, 8, 5, (3, 20, 6), None)["frozen_reference"]
    assert seen["frozen during RL"] is False

