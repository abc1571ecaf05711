"""Micro-batches by a token budget, and the SFT loss's weighting (pure)."""

import random

import pytest
import torch

from rlhf.sft.batching import BudgetError, pad, padded_size, plan_micro_batches
from rlhf.sft.loss import shifted_targets, step_loss, token_losses


@pytest.mark.parametrize("seed", range(20))
def test_a_token_budget_micro_batch_never_exceeds_its_budget(seed):
    rng = random.Random(seed)
    budget = rng.choice([64, 100, 256, 1000])
    lengths = [rng.randint(1, budget) for _ in range(rng.randint(1, 60))]
    ranks = rng.choice([1, 2, 3])
    plan = plan_micro_batches(lengths, budget, 8, ranks)
    assert len({len(batches) for batches in plan}) == 1  # every rank runs as many micro-batches
    seen = [i for batches in plan for micro in batches for i in micro]
    assert sorted(seen) == list(range(len(lengths)))  # each sequence once
    for batches in plan:
        for micro in batches:
            assert padded_size(lengths, micro) <= budget
            ids, attention, targets = pad([[1] * lengths[i] for i in micro], [[1] * lengths[i] for i in micro]) \
                if micro else (torch.zeros(0, 0),) * 3
            assert ids.numel() <= budget  # what the forward computes


def test_sequences_are_bucketed_by_length():
    lengths = [10, 100, 12, 98, 11, 99, 13, 97]
    plan = plan_micro_batches(lengths, 400, 8, 1)
    # the long ones together (4 x 100 = 400), the short ones together: no short one pays for a long one's padding
    assert [sorted(lengths[i] for i in micro) for micro in plan[0]] == [[97, 98, 99, 100], [10, 11, 12, 13]]
    assert plan_micro_batches(lengths, None, 3, 1)[0] == [[1, 5, 3], [7, 6, 2], [4, 0]]  # by count, sorted


def test_a_sequence_over_the_budget_is_refused():
    with pytest.raises(BudgetError, match="does not fit train.max_tokens_per_micro_batch=50"):
        plan_micro_batches([10, 60], 50, 8)


def test_ranks_with_fewer_micro_batches_run_empty_ones():
    plan = plan_micro_batches([10, 10, 10], 10, 8, ranks=2)
    assert plan == [[[0], [2]], [[1], []]]


def test_each_target_token_weighs_the_same_across_sequences():
    """Spec §13's check: one sequence with 1 target token and one with 9: each token weighs 1/10 (a per-sequence mean
    would give the single token 1/2)."""
    logits = torch.zeros(10, 4, requires_grad=True)
    labels = torch.zeros(10, dtype=torch.long)
    first, second = step_loss(token_losses(logits[:1], labels[:1]), 10), step_loss(token_losses(logits[1:], labels[1:]), 10)
    (first + second).backward()
    per_token = logits.grad[:, 0].abs()
    assert torch.allclose(per_token, per_token[0]) and per_token[0] == pytest.approx(0.75 / 10)
    assert (first + second).item() == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_position_t_predicts_target_t_plus_one():
    targets = torch.tensor([[0, 0, 1, 1, 0]], dtype=torch.bool)
    assert shifted_targets(targets).tolist() == [[False, True, True, False, False]]
