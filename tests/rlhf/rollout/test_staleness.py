"""The asynchronous schedule's staleness rules (`rlhf.rollout.staleness.Staleness`), pure: hand cases, then thousands of
random runs of a simulated stream (groups finish in any order, on any weights the engines may hold, DAPO drops some,
the critic's warm-up takes batches, pushes every k updates) in which no trained group is ever past its bound and the
learner never waits for nothing."""

import random

import pytest

from rlhf.rollout.staleness import Staleness


def test_admission_is_areals_rule_with_warmup_batches_and_freed_slots():
    rules = Staleness(per_step=4, max_staleness=1)
    admitted = []
    while rules.may_admit():
        admitted.append(rules.admit())
    assert admitted == list(range(8))  # (0 + 1 + 1) x 4
    rules.retire(2)  # two dropped (DAPO): their slots go to new groups
    assert rules.capacity() == 10 and rules.may_admit()
    rules.warmup_batch()  # a batch of the critic's warm-up counts as a version
    assert rules.capacity() == 14
    rules.pushed(1)
    assert rules.capacity() == 18
    rules.retire(-1)  # a dropped group trained after all, as a filler
    assert rules.capacity() == 17


def test_a_resumed_stream_counts_versions_from_its_start():
    rules = Staleness(per_step=2, max_staleness=0)
    rules.start(7)
    assert rules.newest == 7 and rules.capacity() == 2
    rules.pushed(8)
    assert rules.capacity() == 4


def test_the_pick_is_earliest_deadline_first_then_admission_order():
    rules = Staleness(per_step=2, max_staleness=2)
    assert rules.deadline(admitted_at=3, oldest=None) == 5 and rules.deadline(admitted_at=3, oldest=4) == 6
    assert rules.pick(0, [(4, 0), (2, 5), (2, 3)], running=[]) == [3, 5]
    assert rules.pick(0, [(4, 0)], running=[]) is None  # fewer than P finished


def test_the_pick_waits_for_a_running_group_due_now_but_not_for_one_a_later_update_can_take():
    rules = Staleness(per_step=2, max_staleness=1)
    finished = [(1, 0), (1, 1)]
    # a running group due by update 0: this batch is its last chance, and it is not in it
    assert rules.pick(0, [(1, 0), (1, 1)], running=[0]) is None
    # due by update 1: update 1 can still take it
    assert rules.pick(0, finished, running=[1]) == [0, 1]
    # a batch that could take a group due by 1 takes one due by 2, and three due by 1 run: update 1 takes only two
    assert rules.pick(0, [(1, 0), (2, 1)], running=[1, 1, 1]) is None
    assert rules.pick(0, [(1, 0), (2, 1)], running=[1, 1]) == [0, 1]
    # a batch of groups all due by 1 waits for nothing: no other batch would be more urgent
    assert rules.pick(0, finished + [(1, 2)], running=[1, 1]) == [0, 1]


def test_too_stale():
    rules = Staleness(per_step=1, max_staleness=2)
    assert not rules.too_stale(now=5, oldest=3) and rules.too_stale(now=6, oldest=3)


def simulate(rng: random.Random, per_step: int, max_staleness: int, push_every: int, warmup: int, drop: float,
             batches: int) -> None:
    """Producer and learner as the async schedule plays them, in a random order of events; asserts the bounds."""
    rules = Staleness(per_step, max_staleness)
    updates = 0  # policy updates so far
    running: dict[int, int] = {}  # number -> admitted at (the engines' newest weights then)
    finished: dict[int, tuple] = {}  # number -> (admitted at, its oldest token's version)
    for step in range(batches):
        for _ in range(100_000):
            while rules.may_admit():
                running[rules.admit()] = rules.newest
            # the admission bound: never more groups in flight than (W + warm-up + max_staleness + 1) x P
            versions = rules.newest + rules.warmup_batches
            assert rules.admitted - rules.retired <= (versions + max_staleness + 1) * per_step
            picked = None
            if rng.random() < 0.5 or not running:  # the learner looks (else a group finishes first)
                assert not any(rules.too_stale(updates, oldest) for _, oldest in finished.values())
                picked = rules.pick(updates, [(rules.deadline(*group), n) for n, group in finished.items()],
                                    [rules.deadline(at, None) for at in running.values()])
                if picked is not None:
                    break
                # it waits only while something runs: a wait with nothing running would never end
                assert running, (step, updates, finished)
            number = rng.choice(list(running))
            admitted_at = running.pop(number)
            if rng.random() < drop:  # DAPO: uninformative, its slot is freed
                rules.retire()
                continue
            # its oldest token was sampled on weights the engines held between its admission and now
            finished[number] = admitted_at, rng.randint(admitted_at, rules.newest)
        else:
            pytest.fail("the simulation made no progress")
        assert len(picked) == per_step and len(set(picked)) == per_step
        for number in picked:  # the bound: no trained token more than max_staleness updates old
            assert finished.pop(number)[1] + max_staleness >= updates, (step, number, updates)
        if step < warmup:
            rules.warmup_batch()
        else:
            updates += 1
            if updates % push_every == 0:
                rules.pushed(updates)


def test_random_streams_never_pass_the_bound_and_never_stall():
    rng = random.Random(0)
    for case in range(3000):
        max_staleness = rng.randint(0, 4)
        params = dict(per_step=rng.randint(1, 5), max_staleness=max_staleness,
                      push_every=rng.randint(1, max_staleness + 1), warmup=rng.choice([0, 0, 1, 2, 3]),
                      drop=rng.choice([0.0, 0.0, 0.3, 0.6]), batches=rng.randint(1, 12))
        try:
            simulate(random.Random(case), **params)
        except AssertionError as err:
            raise AssertionError(f"case {case}: {params}") from err
