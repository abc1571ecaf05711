"""RLOO, GAE and REINFORCE++ against the spec's vectors (T13, T14, T20), and their registered estimators."""

from types import SimpleNamespace

import pytest
import torch

from rlhf.algorithms import ADVANTAGE_ESTIMATORS, AdvantageInputs
from rlhf.algorithms.advantages import (discounted_returns, gae, masked_whiten, rloo_advantages,
                                        token_rewards)


def test_rloo_t13():
    assert rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4).tolist() == pytest.approx(
        [0.666667, -0.666667, -0.666667, 0.666667], abs=1e-6)
    assert rloo_advantages(torch.tensor([0.2, 0.5, 0.9, 0.4]), 4).tolist() == pytest.approx(
        [-0.4, 0.0, 0.533333, -0.133333], abs=1e-6)


def test_rloo_leaves_unscorable_samples_out():
    adv = rloo_advantages(torch.tensor([1.0, float("nan"), 0.0]), 3)
    assert adv.tolist() == pytest.approx([1.0, 0.0, -1.0])
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.tensor([1.0]), 1)


def test_gae_t14():
    adv, ret = gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]]), torch.ones(1, 3), 1.0, 0.95)
    assert adv[0].tolist() == pytest.approx([0.46575, 0.385, 0.3], abs=1e-6)
    assert ret[0].tolist() == pytest.approx([0.96575, 0.985, 1.0], abs=1e-6)


def test_gae_ignores_padding():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, _ = gae(torch.tensor([[0.0, 0.0, 1.0, 9.0]]), torch.tensor([[0.5, 0.6, 0.7, 9.0]]), mask, 1.0, 0.95)
    assert adv[0].tolist() == pytest.approx([0.46575, 0.385, 0.3, 0.0], abs=1e-6)


def test_reinforce_pp_t20():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    kl = torch.tensor([[0.1, 0.0, 0.2], [0.0, 0.3, 0.0]])
    rewards = token_rewards(torch.tensor([1.0, 0.0]), mask, kl, kl_coef=0.1)
    returns = discounted_returns(rewards, mask)
    assert returns.flatten().tolist() == pytest.approx([0.97, 0.98, 0.98, -0.03, -0.03, 0.0], abs=1e-6)
    whitened = masked_whiten(returns, mask)
    assert whitened[0].tolist() == pytest.approx([0.7182, 0.7363, 0.7363], abs=1e-4)
    assert whitened[1, :2].tolist() == pytest.approx([-1.0954, -1.0954], abs=1e-4)


def test_empty_completion_carries_no_score():
    mask = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert token_rewards(torch.tensor([5.0, 2.0]), mask).tolist() == [[0.0, 0.0], [2.0, 0.0]]


def experience(rewards, lengths, width=3):
    mask = torch.tensor([[1.0] * n + [0.0] * (width - n) for n in lengths])
    return SimpleNamespace(rewards=torch.tensor(rewards), mask=mask, rollout_logp=torch.full(mask.shape, -1.0),
                           ref_logp=torch.full(mask.shape, -1.5))


ESTIMATOR = SimpleNamespace(scale="std", eps=1e-4, gamma=1.0, lam=1.0)


@pytest.mark.parametrize("name", ["group", "rloo", "reinforce_pp", "reinforce_pp_baseline"])
def test_registered_estimators_give_masked_token_advantages(name):
    exp = experience([1.0, 0.0, 0.5, 0.5], [3, 2, 1, 0])
    adv = ADVANTAGE_ESTIMATORS.get(name)(AdvantageInputs(exp, 2, ESTIMATOR))
    assert adv.shape == exp.mask.shape
    assert (adv[exp.mask == 0] == 0).all()
    assert adv[0, 0] > adv[1, 0]  # the better sample of the first group is pushed up


def test_kl_in_the_reward_lowers_rloo_rewards_by_the_summed_kl():
    exp = experience([1.0, 1.0], [3, 1])
    adv = ADVANTAGE_ESTIMATORS.get("rloo")(AdvantageInputs(exp, 2, ESTIMATOR, kl_coef=0.1, kl_estimator="k1"))
    # k1 = 0.5 per token: rewards 1 - 0.15 and 1 - 0.05 -> the longer (more KL) sample is worse
    assert adv[0, 0].item() == pytest.approx(-0.1) and adv[1, 0].item() == pytest.approx(0.1)


def test_unknown_estimator_lists_the_registered_ones():
    with pytest.raises(ValueError, match="group, reinforce_pp, reinforce_pp_baseline, rloo"):
        ADVANTAGE_ESTIMATORS.get("ppo2")


@pytest.mark.parametrize("name", ["reinforce_pp", "reinforce_pp_baseline", "gae"])
def test_an_unscorable_reward_gets_advantage_0_and_no_part_in_the_statistics(name):
    # rewards (1, 0, NaN, 0.5): the NaN row got -0.866 per token from reinforce_pp and about -0.19 from gae (the NaN
    # read as 0), and shifted the whitening of the others. Now: 0, and the others as if it were not there
    lengths = [3, 2, 3, 1]
    with_nan = experience([1.0, 0.0, float("nan"), 0.5], lengths)
    without = experience([1.0, 0.0, 0.5], [3, 2, 1])
    for exp in (with_nan, without):
        exp.values = torch.full(exp.mask.shape, 0.2) * exp.mask
    group = 4 if name == "reinforce_pp_baseline" else 1
    inputs = AdvantageInputs(with_nan, group, ESTIMATOR, kl_coef=0.1, kl_estimator="k1")
    adv = ADVANTAGE_ESTIMATORS.get(name)(inputs)
    assert adv[2].tolist() == [0.0, 0.0, 0.0]
    reference = ADVANTAGE_ESTIMATORS.get(name)(AdvantageInputs(without, group - (group > 1), ESTIMATOR, kl_coef=0.1,
                                                              kl_estimator="k1"))
    torch.testing.assert_close(adv[[0, 1, 3]], reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["gae", "reinforce_pp"])
def test_across_an_episodes_environment_tokens_the_advantage_bootstraps_from_model_token_to_model_token(name):
    # an episode: model, environment, environment, model, model tokens. The environment's tokens get advantage 0,
    # their values take no part, and the model's tokens get what the same tokens without the holes get
    holes = SimpleNamespace(rewards=torch.tensor([1.0]), mask=torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0]]),
                            values=torch.tensor([[0.5, 9.0, -9.0, 0.6, 0.7]]), rollout_logp=torch.full((1, 5), -1.0),
                            ref_logp=torch.full((1, 5), -1.5))
    packed = SimpleNamespace(rewards=torch.tensor([1.0]), mask=torch.ones(1, 3), values=torch.tensor([[0.5, 0.6, 0.7]]),
                             rollout_logp=torch.full((1, 3), -1.0), ref_logp=torch.full((1, 3), -1.5))
    estimator = SimpleNamespace(scale="std", eps=1e-4, gamma=0.9, lam=0.95)
    estimate = ADVANTAGE_ESTIMATORS.get(name)
    got = estimate(AdvantageInputs(holes, 1, estimator, kl_coef=0.1, kl_estimator="k1"))
    want = estimate(AdvantageInputs(packed, 1, estimator, kl_coef=0.1, kl_estimator="k1"))
    assert got[0, [1, 2]].tolist() == [0.0, 0.0]
    torch.testing.assert_close(got[0, [0, 3, 4]], want[0], atol=1e-6, rtol=0)
    if name == "gae":  # the GAE vector by hand: the score on the last model token, gamma 0.9, lambda 0.95
        delta = [0.9 * 0.6 - 0.5 - 0.05, 0.9 * 0.7 - 0.6 - 0.05, 1.0 - 0.7 - 0.05]  # -0.1 x k1 (0.5) each
        last = delta[2]
        middle = delta[1] + 0.9 * 0.95 * last
        assert got[0, 4].item() == pytest.approx(last) and got[0, 3].item() == pytest.approx(middle)
        assert got[0, 0].item() == pytest.approx(delta[0] + 0.9 * 0.95 * middle)


def test_per_turn_rewards_are_credited_at_their_turn_or_summed_into_the_episodes():
    # two episodes: model tokens 0-1 (a turn; the first earns step_reward 0.5 at its last token 1), the environment's
    # token 2, model tokens 3-4; both end with reward 1
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0]] * 2)
    turns = torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.0], [0.0] * 5])
    batch = SimpleNamespace(rewards=torch.tensor([1.0, 1.0]), mask=mask, turn_rewards=turns, values=torch.zeros(2, 5),
                            rollout_logp=torch.zeros(2, 5), ref_logp=torch.zeros(2, 5))
    cfg = SimpleNamespace(gamma=1.0, lam=1.0, scale="none", eps=1e-4)
    # GAE (values 0, gamma = lambda = 1): a token's advantage is the rewards from it on, its turn's reward included
    gae_adv = ADVANTAGE_ESTIMATORS.get("gae")(AdvantageInputs(batch, 2, cfg))
    assert gae_adv.tolist() == [[1.5, 1.5, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 1.0, 1.0]]
    # a group estimator sums the turns' rewards into the episode's: 1.5 against 1.0, mean 1.25
    group_adv = ADVANTAGE_ESTIMATORS.get("group")(AdvantageInputs(batch, 2, cfg))
    assert group_adv.tolist() == [[0.25, 0.25, 0.0, 0.25, 0.25], [-0.25, -0.25, 0.0, -0.25, -0.25]]
    # REINFORCE++-baseline: the baseline of the episodes' sums (1.25) is taken off at the last token, the turn's
    # reward stays at its turn: returns [0.25, 0.25, -, -0.25, -0.25] and [-0.25] * 4, then whitened: after the
    # first turn both episodes have one future, so only the first turn's tokens are credited
    baseline = ADVANTAGE_ESTIMATORS.get("reinforce_pp_baseline")(AdvantageInputs(batch, 2, cfg))
    returns = torch.tensor([[0.25, 0.25, 0.0, -0.25, -0.25], [-0.25, -0.25, 0.0, -0.25, -0.25]])
    assert torch.allclose(baseline, masked_whiten(returns, mask), atol=1e-6)
    assert baseline[0, 0] > 0 > baseline[0, 3] == baseline[1, 0]
