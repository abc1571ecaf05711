"""Group advantages against the spec's vectors (§3.6, T5, T6) and edge cases (§3.5)."""

import math

import pytest
import torch

from rlhf.algorithms import group_advantages


def test_trl_grpo_vector_t5():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4, scale="std", eps=1e-4)
    assert adv.tolist() == pytest.approx([0.865875, -0.865875, -0.865875, 0.865875], abs=1e-6)


def test_verl_epsilon():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4, eps=1e-6)
    assert adv[0].item() == pytest.approx(0.866024, abs=1e-6)


def test_second_vector():
    adv = group_advantages(torch.tensor([0.2, 0.5, 0.9, 0.4]), group_size=4)
    assert adv.tolist() == pytest.approx([-1.018703, 0.0, 1.358271, -0.339568], abs=1e-5)


def test_dr_grpo_vector_t6():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4, scale="none")
    assert adv.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])


def test_groups_are_independent():
    adv = group_advantages(torch.tensor([1.0, 0.0, 5.0, 7.0]), group_size=2, scale="none")
    assert adv.tolist() == pytest.approx([0.5, -0.5, -1.0, 1.0])


def test_zero_variance_group_gives_zero():
    assert group_advantages(torch.full((4,), 0.7), group_size=4).tolist() == [0.0] * 4


def test_nan_reward_is_left_out_and_gets_zero():
    adv = group_advantages(torch.tensor([1.0, math.nan, 0.0, 0.0, 1.0]), group_size=5)
    expected = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4)
    assert adv[1].item() == 0.0
    assert adv[[0, 2, 3, 4]].tolist() == pytest.approx(expected.tolist())


def test_group_of_one_with_std_is_refused():
    with pytest.raises(ValueError, match="group of one"):
        group_advantages(torch.tensor([1.0, 2.0]), group_size=1)


def test_uneven_split_is_refused():
    with pytest.raises(ValueError, match="do not split"):
        group_advantages(torch.tensor([1.0, 2.0, 3.0]), group_size=2)
