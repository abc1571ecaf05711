import math

import pytest
import torch

from rlhf.rewards.aggregation import (
    REWARD_AGGREGATIONS,
    normalized_sum,
    pama_advantages,
    reference_quantile,
    weighted_sum,
)
from rlhf.rewards.multi_objective import lsc_transform


def ctwa_example():
    """Spec §1.8: 2 sequences, 2 objectives; seq1 has 2 valid tokens, seq2 3."""
    advantages = torch.zeros(2, 3, 2)
    advantages[0, :2] = torch.tensor([0.5, -0.2])
    advantages[1, :3] = torch.tensor([-0.4, 0.6])
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 1]])
    ratio = torch.tensor([[1.0, 1.25, 1.0], [0.9, 1.1, 1.3]])
    return advantages, mask, ratio


def test_pama_batch_aggregate_matches_the_spec_vector():
    advantages, mask, ratio = ctwa_example()
    out, metrics = pama_advantages(advantages, mask, ratio, clip_eps_high=0.2, granularity="batch", apply="scalar")
    # I sums (0.5, 1.2) over 5 valid tokens -> A = (0.1, 0.24) -> s* = 0.1 on every valid token
    assert metrics["pama/s_star"] == pytest.approx(0.1)
    assert torch.allclose(out, torch.tensor([[0.1, 0.1, 0.0], [0.1, 0.1, 0.1]]))
    # weights mode: c* = (1, 0), so each token carries objective 1's Noon advantage
    out, metrics = pama_advantages(advantages, mask, ratio, clip_eps_high=0.2, granularity="batch", apply="weights")
    assert (metrics["pama/weight_0"], metrics["pama/weight_1"]) == (1.0, 0.0)
    assert torch.allclose(out, torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]))


def test_pama_token_granularity_takes_the_worst_served_objective_per_token():
    advantages = torch.tensor([[[0.3, 0.1], [0.4, 0.9], [-0.2, 0.5]]])
    out, _ = pama_advantages(advantages, torch.ones(1, 3), torch.ones(1, 3), 0.2, granularity="token")
    assert torch.allclose(out, torch.tensor([[0.1, 0.4, 0.0]]))  # a negative (Noon: 0) objective freezes the token


def test_pama_rejects_unknown_options():
    advantages, mask, ratio = ctwa_example()
    with pytest.raises(ValueError, match="granularity 'sequence'"):
        pama_advantages(advantages, mask, ratio, 0.2, granularity="sequence")
    with pytest.raises(ValueError, match="apply mode 'mean'"):
        pama_advantages(advantages, mask, ratio, 0.2, apply="mean")


def test_weighted_sum_keeps_an_unscorable_sample_unscorable():
    out = weighted_sum(torch.tensor([[1.0, 2.0], [math.nan, 1.0]]), torch.tensor([0.5, 2.0]))
    assert out[0].item() == pytest.approx(4.5) and math.isnan(out[1].item())


def test_normalized_sum_weighs_objectives_by_weight_not_by_unit():
    # objective 2 opposes objective 1 in units 1000x larger: after per-group z-scoring both count the same
    base = torch.tensor([0.1, 0.4, 0.2, 0.3])
    objectives = torch.stack([base, 1000 * (0.5 - base)], -1)
    out = normalized_sum(objectives, torch.tensor([1.0, 1.0]), group_size=4, eps=1e-6)
    assert out.abs().max().item() < 1e-5  # equal and opposite


def test_lsc_spec_vector():
    # helpful 1.0 (ref 0.5) + harmless -0.2 (ref 0.3): log P(both good) = -1.448154
    total = lsc_transform(torch.tensor([[1.0, -0.2]]), torch.tensor([[0.5, 0.3]]))
    assert total.item() == pytest.approx(-1.448154, abs=1e-6)
    assert math.exp(total.item()) == pytest.approx(0.235004, abs=1e-6)
    assert lsc_transform(torch.tensor([[-50.0]]), torch.tensor([[0.0]])).item() == pytest.approx(-50.0)
    lsc = REWARD_AGGREGATIONS.get("lsc")(None)
    weighted = lsc.combine_rewards(torch.tensor([[1.0, -0.2]]), torch.tensor([2.0, 0.0]), 1, torch.tensor([[0.5, 0.3]]))
    assert weighted.item() == pytest.approx(2 * -0.474077, abs=1e-6)


def test_reference_quantile_spec_vector():
    refs = torch.tensor([0.1, 0.4, 0.2, 0.9, 0.5, 0.3, 0.7, 0.6])[:, None]
    assert reference_quantile(refs, 0.85).item() == pytest.approx(0.695, abs=1e-6)
    assert reference_quantile(refs, 0.85, "normal").item() == pytest.approx(0.721284, abs=1e-5)
    # unscorable samples are skipped; none scorable centres at 0
    assert reference_quantile(torch.tensor([[math.nan]]), 0.85).tolist() == [0.0]


def test_the_registry_names_every_aggregation():
    assert REWARD_AGGREGATIONS.names() == ["lsc", "normalized_sum", "pama", "weighted_sum"]
    with pytest.raises(ValueError, match="unknown reward aggregation 'max'"):
        REWARD_AGGREGATIONS.get("max")
