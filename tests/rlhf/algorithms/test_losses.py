"""Loss aggregation, clipped surrogate and KL estimators against the spec's vectors (T7-T11)."""

import pytest
import torch

from rlhf.algorithms import aggregate_loss, clipped_policy_loss, group_advantages, kl_estimate
from rlhf.algorithms.losses import clipped_value_loss

LOSSES = torch.tensor([[1.0, 3.0, 0.0, 0.0], [2.0, 2.0, 2.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])


@pytest.mark.parametrize("mode, expected", [("grpo", 2.5), ("token-mean", 16 / 6), ("dr_grpo", 2.0),
                                            ("seq-mean-token-sum-norm", 4.0)])
def test_aggregation_t7(mode, expected):
    assert aggregate_loss(LOSSES, MASK, mode).item() == pytest.approx(expected, abs=1e-6)


def test_padding_values_never_leak():
    polluted = LOSSES.clone()
    polluted[0, 2:] = 1e6
    assert aggregate_loss(polluted, MASK, "token-mean").item() == pytest.approx(16 / 6)


def test_micro_batches_add_up_to_the_batch():
    for mode in ("grpo", "token-mean", "dr_grpo", "seq-mean-token-sum-norm"):
        whole = aggregate_loss(LOSSES, MASK, mode)
        parts = sum(aggregate_loss(LOSSES[i : i + 1], MASK[i : i + 1], mode, num_sequences=2,
                                   num_tokens=MASK.sum().item(), max_len=4) for i in range(2))
        assert parts.item() == pytest.approx(whole.item()), mode


@pytest.mark.parametrize("mode, expected", [("grpo", 0.0), ("token-mean", 0.346350), ("dr_grpo", 0.216469)])
def test_initial_loss_t8(mode, expected):
    lengths = [2, 4, 3, 1]
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4)
    mask = torch.tensor([[1.0] * n + [0.0] * (4 - n) for n in lengths])
    logp = torch.zeros(4, 4)
    token_losses = clipped_policy_loss(logp, logp, adv[:, None].expand(4, 4))
    assert aggregate_loss(token_losses, mask, mode).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("ratio, adv, eps_high, expected", [
    (1.3, 1.0, 0.2, -1.2), (1.3, 1.0, 0.28, -1.28), (1.3, -1.0, 0.2, 1.3), (0.7, -1.0, 0.2, 0.8),
    (0.7, 1.0, 0.2, -0.7), (5.0, -1.0, 0.2, 5.0),
])
def test_clipped_surrogate_t9(ratio, adv, eps_high, expected):
    logp = torch.tensor([float(torch.log(torch.tensor(ratio)))])
    loss = clipped_policy_loss(logp, torch.zeros(1), torch.tensor([adv]), 0.2, eps_high)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_dual_clip_t10():
    logp = torch.log(torch.tensor([5.0, 5.0]))
    loss = clipped_policy_loss(logp, torch.zeros(2), torch.tensor([-1.0, 1.0]), dual_clip=3.0)
    assert loss.tolist() == pytest.approx([3.0, -1.2], abs=1e-5)


def test_on_policy_ratio_has_the_gradient_of_logp():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = clipped_policy_loss(logp, logp.detach(), torch.tensor([2.0, -1.0])).sum()
    loss.backward()
    assert logp.grad.tolist() == pytest.approx([-2.0, 1.0])


def test_kl_estimators_t11():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    assert kl_estimate(logp, ref, "k1").tolist() == pytest.approx([0.5, -1.0])
    assert kl_estimate(logp, ref, "k2").tolist() == pytest.approx([0.125, 0.5])
    assert kl_estimate(logp, ref, "k3").tolist() == pytest.approx([0.106531, 0.718282], abs=1e-6)


def test_ratio_overflow_is_clamped():
    loss = clipped_policy_loss(torch.tensor([500.0]), torch.zeros(1), torch.tensor([-1.0]))
    assert torch.isfinite(loss).all()
    assert torch.isfinite(kl_estimate(torch.tensor([-500.0]), torch.zeros(1), "k3")).all()


def test_unknown_names():
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(torch.zeros(1), torch.zeros(1), "k4")
    with pytest.raises(ValueError, match="token-mean"):
        aggregate_loss(LOSSES, MASK, "mean")


def test_clipped_value_loss():
    values, old, returns = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0])
    # token 1: unclipped (1-0)^2=1, clipped V=0.7 -> 0.49: max 1 -> 0.5; token 2: (0-1)^2=1, clipped 0.3 -> 0.49
    assert clipped_value_loss(values, old, returns, 0.2).tolist() == pytest.approx([0.5, 0.5])
    values = torch.tensor([0.9, 0.55])
    # clipping can only raise the loss: V=0.9 clipped to 0.7 (-> 0.245 vs 0.405); V=0.55 unclipped
    assert clipped_value_loss(values, old, torch.tensor([0.0, 1.0]), 0.2).tolist() == pytest.approx(
        [0.405, 0.10125])
    assert clipped_value_loss(values, old, torch.tensor([0.0, 1.0]), None).tolist() == pytest.approx(
        [0.405, 0.10125])


def loss_cfg(**overrides):
    from types import SimpleNamespace

    return SimpleNamespace(**{"name": "clipped", "clip_eps_low": 0.2, "clip_eps_high": 0.2, "dual_clip": None,
                              "ratio_against": "rollout", **overrides})


def correction_cfg(**overrides):
    from types import SimpleNamespace

    return SimpleNamespace(**{"mode": "truncate", "level": "token", "low": None, "high": 2.0, **overrides})


def test_the_truncated_is_weight_is_against_the_old_policy_not_the_one_trained():
    import math

    from rlhf.algorithms import LossInputs, policy_objective

    # pi_rollout 0.4, pi_old 0.5, pi_theta 0.6: the weight is pi_old / pi_rollout = 1.25 (pi_theta / pi_rollout,
    # 1.5, would count the PPO ratio pi_theta / pi_old = 1.2 twice)
    logs = {name: torch.tensor([[math.log(p)]]) for name, p in (("rollout", 0.4), ("old", 0.5), ("theta", 0.6))}
    inputs = LossInputs(logs["theta"], logs["old"], logs["rollout"], None, torch.ones(1, 1), torch.ones(1, 1),
                        loss_cfg())
    out = policy_objective(inputs, correction=correction_cfg())
    assert out.metrics["correction/weight"].item() == pytest.approx(1.25)
    assert out.token_losses.item() == pytest.approx(-1.2 * 1.25)  # ratio 1.2 (at the clip edge) x weight
    # with the engine's logprobs as the old ones the weight is 1: nothing is multiplied in again
    inputs.old_logp = logs["rollout"]
    assert policy_objective(inputs, correction=correction_cfg()).metrics["correction/weight"].item() == pytest.approx(1.0)


def test_decoupled_ppo_centres_the_clip_on_the_proximal_policy_and_weighs_the_behaviour_gap():
    from rlhf.algorithms import LossInputs, policy_objective

    # docs/algorithms.md's vector: one update per batch, so the proximal policy is the loss forward's own logprobs
    # (detached, ratio 1); the engine sampled at log q = -1.2 with weights a few updates old
    logp = torch.tensor([[-1.0]], requires_grad=True)
    inputs = LossInputs(logp, logp.detach(), torch.tensor([[-1.2]]), None, torch.ones(1, 1), torch.ones(1, 1),
                        loss_cfg())
    out = policy_objective(inputs, correction=correction_cfg())
    out.token_losses.sum().backward()
    assert out.token_losses.item() == pytest.approx(-1.221403, abs=1e-6)  # w = min(e^0.2, 2), ratio 1
    assert logp.grad.item() == pytest.approx(-1.221403, abs=1e-6)  # w x d(ratio)/d(log pi_theta) at ratio 1
    assert out.metrics["clip_fraction"].item() == 0.0
    # a stale engine far from the proximal policy: the weight is truncated at 2, the clip is still around pi_old
    inputs.rollout_logp = torch.tensor([[-3.0]])
    assert policy_objective(inputs, correction=correction_cfg()).token_losses.item() == pytest.approx(-2.0)


def test_a_mask_correction_leaves_tokens_out_of_the_loss_but_not_the_kl_term():
    from rlhf.algorithms import LossInputs, policy_objective

    # the spec's vector: ratios (1.221, 0.607, 3.004); [0.5, 2] leaves the third token out
    old, rollout = torch.tensor([[-1.0, -1.5, -0.5]]), torch.tensor([[-1.2, -1.0, -1.6]])
    logp, ref, mask, adv = old.clone(), torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 3)
    inputs = LossInputs(logp, old, rollout, ref, adv, mask, loss_cfg())
    out = policy_objective(inputs, kl_beta=0.1, kl_estimator="k3", correction=correction_cfg(mode="mask", low=0.5))
    kl = kl_estimate(logp, ref, "k3")[0].tolist()
    assert out.token_losses[0].tolist() == pytest.approx([-1.221403 + 0.1 * kl[0], -0.606531 + 0.1 * kl[1],
                                                          0.1 * kl[2]], abs=1e-5)
    assert out.metrics["correction/tokens_dropped"][0].tolist() == [0.0, 0.0, 1.0]
    assert out.sequence_metrics["correction/sequences_dropped"].tolist() == [1.0]  # it lost a token
    assert "correction/ratio" in out.extremes
    none = policy_objective(inputs, correction=correction_cfg(mode="none"))
    assert "correction/weight" not in none.metrics


def test_a_loss_returns_its_metrics_and_the_kl_term_is_a_correction():
    from rlhf.algorithms import LossInputs, policy_objective

    logp = torch.tensor([[0.0, 0.5]])
    inputs = LossInputs(logp, torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2),
                        torch.ones(1, 2), loss_cfg())
    out = policy_objective(inputs, kl_beta=0.1, kl_estimator="k3")
    assert out.metrics["clip_fraction"].tolist() == [[0.0, 1.0]]  # e^0.5 = 1.65 > 1.2
    kl = kl_estimate(logp, torch.zeros(1, 2), "k3")
    assert out.metrics["kl"][0].tolist() == pytest.approx(kl[0].tolist())
    plain = policy_objective(LossInputs(logp, torch.zeros(1, 2), torch.zeros(1, 2), None, torch.ones(1, 2),
                                        torch.ones(1, 2), loss_cfg()))
    assert (out.token_losses - plain.token_losses)[0].tolist() == pytest.approx((0.1 * kl)[0].tolist(), abs=1e-6)
