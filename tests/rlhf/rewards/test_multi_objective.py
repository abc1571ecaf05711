import itertools

import pytest
import torch

from rlhf.rewards.multi_objective import lsc_transform, pama_weights


@pytest.mark.parametrize("advantages, s_star, weights", [
    ((0.3, 0.1), 0.1, (0, 1)),
    ((0.3, -0.2), 0.0, (0.4, 0.6)),  # T15
    ((-0.3, -0.1), -0.1, (0, 1)),
    ((0.5, 0.0, 0.2), 0.0, (0, 1, 0)),
    ((0.4, 0.25, 0.9), 0.25, (0, 1, 0)),  # T16
    ((0.0, 0.0), 0.0, (0.5, 0.5)),
    ((0.7,), 0.7, (1,)),  # one objective: Noon PPO on it
])
def test_spec_vectors(advantages, s_star, weights):
    s, c = pama_weights(torch.tensor(advantages))
    assert s == pytest.approx(s_star)
    assert c.tolist() == pytest.approx(list(weights))
    assert (c * torch.tensor(advantages, dtype=torch.float64)).sum().item() == pytest.approx(s_star, abs=1e-6)


def test_closed_form_matches_brute_force_over_the_simplex():
    generator = torch.Generator().manual_seed(0)
    grid = [c for c in itertools.product(range(41), repeat=3) if sum(c) == 40]
    simplex = torch.tensor(grid, dtype=torch.float64) / 40
    for _ in range(50):
        a = torch.randn(3, generator=generator, dtype=torch.float64)
        s, c = pama_weights(a)
        brute = (simplex @ a).abs().min().item()
        assert abs(s) <= brute + 1e-12  # never worse than any grid point
        assert abs(s) == pytest.approx(brute, abs=a.abs().max().item() / 40)  # the grid's spacing bounds the gap
        assert c.sum().item() == pytest.approx(1.0) and (c >= 0).all()
        assert (c @ a).item() == pytest.approx(s)


def test_lsc_t17():
    value = lsc_transform(torch.tensor([1.0, -0.2]), torch.tensor([0.5, 0.3]))
    assert value.item() == pytest.approx(-1.448154, abs=1e-6)
    assert torch.exp(value).item() == pytest.approx(0.235004, abs=1e-6)


def test_lsc_is_stable_far_below_the_reference():
    assert lsc_transform(torch.tensor([[-50.0]]), torch.tensor([0.0])).item() == pytest.approx(-50.0)
