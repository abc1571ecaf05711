"""rollout.mode=async alone runs decoupled PPO with AReaL's behaviour-weight cap (a mask, not a truncation), and says
where the clip cannot act."""

import math

import pytest
import torch

from rlhf.algorithms.corrections import rollout_correction
from rlhf.config import compose_config, load_config, settings_that_cannot_act


def correction(*overrides):
    return load_config(compose_config("output_dir=/tmp/unused", *overrides)).algo.correction


def test_async_alone_takes_areals_cap_and_a_chosen_correction_stays():
    areal = correction("rollout.mode=async")
    assert (areal.mode, areal.level, areal.low, areal.high) == ("mask", "token", None, 5.0)
    assert correction("rollout.mode=async", "algo/correction=tis").mode == "truncate"
    # the other preset as async's default, and the cap's own override
    assert correction("rollout.mode=async", "algo/correction@rollout.async_correction=tis").mode == "truncate"
    assert correction("rollout.mode=async", "rollout.async_correction.high=3").high == 3.0
    # on-policy async (staleness 0, whole requests) and the other modes keep what they had
    assert correction("rollout.mode=async", "rollout.max_staleness=0", "rollout.partial_rollouts=false").mode == "none"
    assert correction().mode == "none"
    with pytest.raises(ValueError, match="choose a rollout correction"):
        correction("rollout.mode=one_step_off")


def test_areals_cap_masks_the_tokens_above_it_and_leaves_the_others_uncapped():
    # AReaL's behav_imp_weight_cap: weight pi_old / q where it is <= the cap, 0 (left out) above it
    old = torch.tensor([[-1.0, -1.0, -1.0]])
    behaviour = torch.tensor([[-1.2, -2.5, -3.0]])  # ratios e^0.2, e^1.5, e^2
    mask = torch.ones_like(old)
    weight, keep = rollout_correction(old, behaviour, mask, level="token", mode="mask", low=None, high=5.0)
    assert keep.tolist() == [[True, True, False]]
    assert weight[0, :2].tolist() == pytest.approx([math.exp(0.2), math.exp(1.5)], rel=1e-6) and weight[0, 2] == 0
    truncated, _ = rollout_correction(old, behaviour, mask, level="token", mode="truncate", high=2.0)
    assert truncated[0].tolist() == pytest.approx([math.exp(0.2), 2.0, 2.0], rel=1e-6)  # TIS, not AReaL


def test_the_start_up_warns_that_the_clip_cannot_act_with_one_update_per_batch():
    cfg = load_config(compose_config("output_dir=/tmp/unused", "rollout.mode=async"))
    [warning] = settings_that_cannot_act(cfg)
    assert warning.startswith("rollout.mode=async: the policy loss's clip can never act")
    two = load_config(compose_config("output_dir=/tmp/unused", "rollout.mode=async", "algo.update.mini_batches=2"))
    assert settings_that_cannot_act(two) == []
