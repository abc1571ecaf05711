"""The rollout-mode simulation (scripts/simulate_async.py): its cost model on hand-computed cases, and the
properties a prediction rests on."""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from simulate_async import Costs, generation_time, simulate_async, simulate_batches  # noqa: E402

COSTS = Costs(decode_s=1.0, decode_per_seq_s=1.0, train_s_per_token=0.5, push_s=2.0)


def constant(length):
    return lambda: length


def test_a_batch_shrinks_as_its_sequences_end():
    # lengths 1 and 3: one step at batch 2 (3 s), two at batch 1 (2 s each)
    assert generation_time([1, 3], COSTS) == 7.0
    assert generation_time([2, 2], COSTS) == 6.0


def test_sync_is_generation_then_training_then_push():
    # 2 prompts x 2 samples of 3 tokens on 1 engine + 1 learner, colocated over both devices: each device generates
    # one group (3 steps at batch 2: 9 s), then trains half of 12 tokens (3 s), then the push (2 s)
    assert simulate_batches("sync", constant(3), COSTS, 1, 1, prompts=2, group=2, steps=2) == [14.0, 14.0]
    # split: the engine generates both groups (3 steps at batch 4: 15 s), the learner trains all 12 tokens (6 s)
    assert simulate_batches("sync-split", constant(3), COSTS, 1, 1, prompts=2, group=2, steps=2) == [23.0, 23.0]
    # one step off: the next batch's 15 s of generation hide the 6 s of training
    assert simulate_batches("one_step_off", constant(3), COSTS, 1, 1, prompts=2, group=2, steps=2) == [17.0, 17.0]


def test_async_without_staleness_is_the_split_synchronous_loop():
    times, _ = simulate_async(constant(3), COSTS, 1, 1, prompts=2, group=2, steps=3, max_staleness=0, partial=False)
    # the first update waits for its batch (15 s) and trains (6 s); later ones also wait for the push (2 s)
    assert times == [21.0, 23.0, 23.0]


@pytest.mark.parametrize("partial", [True, False])
def test_with_a_long_tail_staleness_buys_throughput(partial):
    import random

    rng = random.Random(0)
    tail = lambda: 200 if rng.random() < 0.1 else 10  # noqa: E731  # one sequence in ten runs 20x longer
    costs = Costs(decode_s=0.01, decode_per_seq_s=0.0001, train_s_per_token=1e-4, push_s=0.05)
    shape = dict(engines=2, learners=2, prompts=8, group=4, steps=20)
    fresh, _ = simulate_async(tail, costs, **shape, max_staleness=0, partial=partial)
    stale, idle = simulate_async(tail, costs, **shape, max_staleness=4, partial=partial)
    assert sum(stale) < 0.6 * sum(fresh)  # the engines stop waiting for the longest sequence of each batch
    assert all(0 <= v <= 1 for v in idle.values())
