import pytest
import torch

from rlhf.algorithms.reward_shaping import (
    KLController,
    RunningMoments,
    informative_groups,
    normalize_rewards,
    soft_overlong_punishment,
)


def test_reward_norm_and_clip_t18():
    moments = RunningMoments()
    out = normalize_rewards(torch.tensor([2.0, 4.0, 6.0, 8.0]), moments, clip=0.8)
    assert moments.mean == pytest.approx(5.0) and moments.std == pytest.approx(2.581989, abs=1e-6)
    assert out.tolist() == pytest.approx([-0.8, -0.387298, 0.387298, 0.8], abs=1e-6)


def test_running_moments_merge_equals_one_pass():
    data = torch.randn(50, generator=torch.Generator().manual_seed(0))
    merged = RunningMoments()
    for chunk in data.split(7):
        merged.update(chunk)
    assert merged.mean == pytest.approx(data.mean().item(), abs=1e-6)
    assert merged.std == pytest.approx(data.std().item(), abs=1e-6)


def test_nan_rewards_do_not_poison_the_statistics():
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, float("nan"), 3.0]))
    assert moments.count == 2 and moments.mean == 2.0


def test_kl_controllers():
    fixed = KLController(0.05)
    fixed.update(10.0, 64)
    assert fixed.value == 0.05
    adaptive = KLController(0.1, target=1.0, horizon=100)
    adaptive.update(5.0, 10)  # error clipped to +0.2
    assert adaptive.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    adaptive.update(0.9, 10)
    assert adaptive.value == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 10 / 100))


def test_soft_overlong_punishment_t12():
    lengths = torch.tensor([16384, 16385, 18432, 20480, 20481])
    out = soft_overlong_punishment(lengths, max_len=20480, buffer=4096)
    assert out.tolist() == pytest.approx([0.0, -0.000244, -0.5, -1.0, -1.0], abs=1e-6)
    # TRL's docstring example, and the penalty factor
    assert soft_overlong_punishment(torch.tensor([90]), 100, 20).item() == pytest.approx(-0.5)
    assert soft_overlong_punishment(torch.tensor([90]), 100, 20, factor=2.0).item() == pytest.approx(-1.0)


def test_soft_overlong_punishment_rejects_a_buffer_longer_than_the_budget():
    with pytest.raises(ValueError, match="overlong buffer 80"):
        soft_overlong_punishment(torch.tensor([10]), max_len=64, buffer=80)


def test_dynamic_sampling_filter_t19():
    # p1 all correct, p2 mixed, p3 all wrong: only p2 teaches anything; p4 is a group of one (kept, as verl does)
    kept = informative_groups(torch.tensor([1.0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0]), group_size=4)
    assert kept.tolist() == [False, True, False]
    assert informative_groups(torch.tensor([1.0]), group_size=1).tolist() == [True]


def test_dynamic_sampling_ignores_unscorable_samples():
    nan = float("nan")
    kept = informative_groups(torch.tensor([1.0, nan, 1.0, 0.0, nan, 1.0, nan, nan, 2.0]), group_size=3)
    assert kept.tolist() == [False, True, False]
