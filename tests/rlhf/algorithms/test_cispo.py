"""CISPO against hand-computed vectors from the paper's formula."""

import math
from types import SimpleNamespace

import pytest
import torch

from rlhf.algorithms import LossInputs, cispo_loss, policy_objective


def test_the_weight_is_clipped_and_carries_no_gradient_but_every_token_keeps_one():
    # ratios e^0.5 = 1.6487 (clipped to 1.28), e^-0.1 = 0.9048 (kept), e^-3 = 0.0498 (no lower bound: kept)
    old = torch.zeros(3)
    logp = torch.tensor([0.5, -0.1, -3.0], requires_grad=True)
    adv = torch.tensor([1.0, 2.0, -1.0])
    losses, weight, ratio = cispo_loss(logp, old, adv, eps_low=1.0, eps_high=0.28)
    assert ratio.tolist() == pytest.approx([math.exp(0.5), math.exp(-0.1), math.exp(-3.0)], rel=1e-6)
    assert weight.tolist() == pytest.approx([1.28, math.exp(-0.1), math.exp(-3.0)], rel=1e-6)
    assert not weight.requires_grad
    assert losses.tolist() == pytest.approx([-1.28 * 0.5, -math.exp(-0.1) * 2 * -0.1, -math.exp(-3.0) * -1 * -3.0],
                                            rel=1e-6)
    losses.sum().backward()
    # d/dlogp of -sg(w) A logp = -w A: the clipped token keeps its gradient (PPO's clip would zero it)
    assert logp.grad.tolist() == pytest.approx([-1.28, -2 * math.exp(-0.1), math.exp(-3.0)], rel=1e-6)


def test_the_registered_loss_reports_the_clipped_fraction_of_tokens():
    cfg = SimpleNamespace(name="cispo", clip_eps_low=1.0, clip_eps_high=0.28, ratio_against="rollout", dual_clip=None)
    logp = torch.tensor([[0.5, -0.1, -3.0, 0.0]])
    out = policy_objective(LossInputs(logp, torch.zeros(1, 4), torch.zeros(1, 4), None, torch.ones(1, 4),
                                      torch.ones(1, 4), cfg))
    assert out.metrics["clip_fraction"].tolist() == [[1.0, 0.0, 0.0, 0.0]]
