"""The policy learner reports the time it spends on old logprobs (a phase of the issue-6 breakdown)."""

import os

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
