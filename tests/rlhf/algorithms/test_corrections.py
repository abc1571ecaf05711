"""Rollout corrections against the spec's vectors (§11) and our own (docs/algorithms.md)."""

import pytest
import torch

from rlhf.algorithms import rollout_correction

# one sequence, all valid: o = (-1.0, -1.5, -0.5), q = (-1.2, -1.0, -1.6)
OLD, ROLLOUT, MASK = torch.tensor([[-1.0, -1.5, -0.5]]), torch.tensor([[-1.2, -1.0, -1.6]]), torch.ones(1, 3)


def correct(level, mode, low=None, high=None, old=OLD, rollout=ROLLOUT, mask=MASK):
    weight, keep = rollout_correction(old, rollout, mask, level=level, mode=mode, low=low, high=high)
    return weight[0].tolist(), keep[0].tolist()


def test_token_level():
    weight, keep = correct("token", "truncate", high=2.0)
    assert weight == pytest.approx([1.221403, 0.606531, 2.0], abs=1e-6) and keep == [True] * 3
    weight, keep = correct("token", "mask", low=0.5, high=2.0)
    assert keep == [True, True, False] and weight == pytest.approx([1.221403, 0.606531, 0.0], abs=1e-6)
    # IcePop is the token mask under its bounds: 3.004 is inside [0.5, 5]
    weight, keep = correct("token", "icepop", low=0.5, high=5.0)
    assert keep == [True] * 3 and weight == pytest.approx([1.221403, 0.606531, 3.004166], abs=1e-6)


def test_sequence_and_geometric_levels():
    # R = exp(0.8) = 2.225541 on every token
    weight, keep = correct("sequence", "truncate", high=2.0)
    assert weight == pytest.approx([2.0] * 3) and keep == [True] * 3
    assert correct("sequence", "mask", low=0.5, high=2.0) == ([0.0] * 3, [False] * 3)  # the whole sequence dropped
    assert correct("sequence", "mask", high=3.0)[0] == pytest.approx([2.225541] * 3, abs=1e-6)
    # G = exp(0.8 / 3) = 1.305605: Geo-RS [0.99, 1.01] drops it; a wider band keeps it at weight 1
    assert correct("geometric", "mask", low=0.99, high=1.01) == ([0.0] * 3, [False] * 3)
    assert correct("geometric", "mask", low=0.99, high=1.4) == ([1.0] * 3, [True] * 3)
    assert correct("geometric", "truncate", high=1.2)[0] == pytest.approx([1.2] * 3)


def test_padding_is_never_kept_and_does_not_count_in_the_sequence_ratios():
    # our own vector: two sequences, the second of 2 valid tokens, d = (0.3, -0.1 | 0.2, 0.4, pad)
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.8, -0.6, -9.0]])
    rollout = torch.tensor([[-1.3, -1.9, -0.5], [-1.0, -1.0, -0.1]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    weight, keep = rollout_correction(old, rollout, mask, level="sequence", mode="truncate", high=10.0)
    assert keep.tolist() == [[True, True, False], [True, True, False]]
    torch.testing.assert_close(weight, torch.tensor([[1.221403, 1.221403, 0.0], [1.822119, 1.822119, 0.0]]),
                               atol=1e-6, rtol=0)  # e^0.2 and e^0.6: the padding's d (9.0 - 0.1) counts nowhere
    weight, keep = rollout_correction(old, rollout, mask, level="geometric", mode="mask", low=0.9, high=1.2)
    assert keep.tolist() == [[True, True, False], [False, False, False]]  # G = e^0.1 = 1.105, e^0.3 = 1.350
    assert weight.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]


def test_the_weight_carries_no_gradient():
    old = OLD.clone().requires_grad_()
    weight, _ = rollout_correction(old, ROLLOUT, MASK, level="token", mode="truncate", high=2.0)
    assert not weight.requires_grad


def test_unknown_levels_and_modes_and_missing_bounds_are_refused():
    with pytest.raises(ValueError, match="icepop is a token-level mask"):
        correct("sequence", "icepop", low=0.5, high=5.0)
    with pytest.raises(ValueError, match="unknown correction level"):
        correct("word", "mask", high=2.0)
    with pytest.raises(ValueError, match="needs its cap"):
        correct("token", "truncate")
