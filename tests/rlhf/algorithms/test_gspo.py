"""GSPO against hand-computed vectors from the paper's formulas."""

import math
from types import SimpleNamespace

import pytest
import torch

from rlhf.algorithms import LossInputs, aggregate_loss, gspo_loss, policy_objective


def test_the_ratio_and_its_clip_are_per_sequence():
    old = torch.zeros(2, 3)
    # sequence 0: token log-ratios 0.1, -0.1, 0.3 -> mean 0.1, s = e^0.1 = 1.10517 (clipped to 1 + 4e-4 for A > 0)
    # sequence 1: 2e-4 on its two tokens (third is padding) -> s = e^2e-4 = 1.0002 (inside [1 - 3e-4, 1 + 4e-4])
    logp = torch.tensor([[0.1, -0.1, 0.3], [2e-4, 2e-4, 5.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    adv = torch.tensor([[1.0] * 3, [-2.0] * 3])
    losses, ratio = gspo_loss(logp, old, adv, mask, 3e-4, 4e-4)
    assert ratio[0].tolist() == pytest.approx([math.exp(0.1)] * 3, rel=1e-6)
    assert ratio[1, :2].tolist() == pytest.approx([math.exp(2e-4)] * 2, rel=1e-7) and ratio[1, 2] == 0
    assert losses[0].tolist() == pytest.approx([-(1 + 4e-4)] * 3, rel=1e-6)  # clipped: min picks -clip(s) A
    assert losses[1].tolist() == pytest.approx([2 * math.exp(2e-4)] * 2 + [0.0], rel=1e-6)
    # gradient: clipped sequence 0 gives none; sequence 1's token t gets -A s / |y| under the sequence mean
    aggregate_loss(losses, mask, "grpo").backward()
    assert logp.grad[0].tolist() == pytest.approx([0.0] * 3)
    assert logp.grad[1].tolist() == pytest.approx([2 * math.exp(2e-4) / 2 / 2] * 2 + [0.0], rel=1e-6)


def test_the_registered_loss_reports_the_clipped_fraction_of_sequences():
    cfg = SimpleNamespace(name="gspo", clip_eps_low=3e-4, clip_eps_high=4e-4, ratio_against="rollout", dual_clip=None)
    logp = torch.tensor([[0.1, -0.1, 0.3], [2e-4, 2e-4, 0.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    out = policy_objective(LossInputs(logp, torch.zeros(2, 3), torch.zeros(2, 3), None, torch.ones(2, 3), mask, cfg))
    clipped = (out.metrics["clip_fraction"] * mask).sum() / mask.sum()
    assert clipped.item() == pytest.approx(3 / 5)  # sequence 0's three tokens of the five


def test_the_sequence_log_ratio_is_bounded_at_the_sequence_level():
    # a sequence whose token log-ratios average 15: s = e^10 (verl's bound), not e^15; a per-token clamp at 20 would
    # have let it through
    logp, old, mask = torch.full((1, 4), 15.0), torch.zeros(1, 4), torch.ones(1, 4)
    _, ratio = gspo_loss(logp, old, -torch.ones(1, 4), mask, 3e-4, 4e-4)
    assert ratio[0].tolist() == pytest.approx([math.exp(10.0)] * 4, rel=1e-6)


def test_dual_clip_bounds_a_negative_advantage_sequence_as_the_token_level_one_does():
    # A = -1, s = 4.95 (log 1.599): PPO's clip gives max(4.95, 1.0004) = 4.95; the dual clip c = 3 bounds it at 3.0
    logp, old, mask, adv = torch.full((1, 2), math.log(4.95)), torch.zeros(1, 2), torch.ones(1, 2), -torch.ones(1, 2)
    plain, _ = gspo_loss(logp, old, adv, mask, 3e-4, 4e-4)
    dual, _ = gspo_loss(logp, old, adv, mask, 3e-4, 4e-4, dual_clip=3.0)
    assert plain[0].tolist() == pytest.approx([4.95] * 2) and dual[0].tolist() == pytest.approx([3.0] * 2)
    cfg = SimpleNamespace(name="gspo", clip_eps_low=3e-4, clip_eps_high=4e-4, ratio_against="rollout", dual_clip=3.0)
    out = policy_objective(LossInputs(logp, old, old, None, adv, mask, cfg))  # the config's dual clip reaches it
    assert out.token_losses[0].tolist() == pytest.approx([3.0] * 2)
