import pytest
import torch

from rlhf.algorithms.reward_shaping import KLController, RunningMoments, normalize_rewards


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
