"""The asynchronous schedule's bookkeeping without engines: admission, the learner's pick, DAPO's top-up, pushes that
reach no engine, a restarted engine's start-up under the GPU guard, and what a synchronous resume of an async
checkpoint does. The producer's part (admit, the engines finish, score) is played here step by step."""

import threading
import time
from types import SimpleNamespace

import pytest

import rlhf.rollout.asynchronous
from rlhf.config import compose_config, load_config
from rlhf.data import PromptBatch
from rlhf.engines.base import Sample, SamplingSettings
from rlhf.groups import Groups, RewardResult
from rlhf.rollout.asynchronous import Asynchronous
from rlhf.rollout.schedules import Synchronous, make_schedule
from rlhf.rollout.sources import SingleTurn
from rlhf.rollout.timing import PhaseTimer


class Prompts:
    """A prompt stream of endless rows."""

    def __init__(self):
        self.cursor = 0

    def draw(self, size):
        self.cursor += size
        return list(range(self.cursor - size, self.cursor))

    def batch(self, rows):
        return PromptBatch([{"prompt": f"p{row}"} for row in rows], [[1, 2] for _ in rows], [f"p{r}" for r in rows])

    def state_dict(self):
        return {"cursor": self.cursor}

    def load_state_dict(self, state):
        self.cursor = state["cursor"]


class Route:
    """A weight route that reaches the engines listed in `reaching`."""

    def __init__(self, reaching):
        self.version, self.reaching = 0, reaching

    def push(self):
        self.version += 1
        return list(self.reaching)


def async_schedule(*overrides, informative=True, reaching=(0,), gpu_guard=None, monkeypatch=None):
    cfg = load_config(compose_config("output_dir=/tmp/unused", "rollout.mode=async", *overrides))
    actor = SimpleNamespace(submit=SimpleNamespace(remote=lambda requests, partial: None))
    actors = SimpleNamespace(rollouts=[actor])
    sampler = SimpleNamespace(
        source=SingleTurn(actors), settings=SamplingSettings(4, 1.0, 1.0),
        score=lambda batch, samples, *step: Groups(batch, samples, RewardResult({"r": [1.0] * len(samples[0])},
                                                                        [1.0] * len(samples[0]), {})),
        informative=lambda groups: [informative])
    schedule = Asynchronous(actors, cfg, sampler, Prompts(), 0, Route(reaching), gpu_guard)
    # what _start does, without the producer thread: the test plays the producer
    schedule.pushes[0], schedule.started, schedule.producer = 0, time.perf_counter(), SimpleNamespace(join=lambda: 0)
    monkeypatch.setattr(rlhf.rollout.asynchronous, "make_experience", lambda *args: None)
    return schedule


def produce(schedule: Asynchronous) -> None:
    """Admit what the bound allows; every running group finishes on the weights it was admitted at, and is scored."""
    schedule._admit()
    with schedule.cond:
        running = [job for job in schedule.live.values() if job.groups is None and job not in schedule.buffer]
    for job in running:
        samples = [Sample([3, 4], [-1.0, -1.0], "ab", False, versions=[job.admitted_at] * 2)
                   for _ in range(schedule.group_size)]
        schedule._score(job, samples)


def learn(schedule: Asynchronous, step: int, seconds: float = 5.0):
    """The learner's `next` while the producer goes on; fails if no batch comes."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(batch=schedule.next(step, PhaseTimer())), daemon=True)
    thread.start()
    deadline = time.monotonic() + seconds
    while thread.is_alive() and time.monotonic() < deadline:
        produce(schedule)
        thread.join(0.01)
    if thread.is_alive():
        with schedule.cond:
            schedule.error = RuntimeError("the test gave up")
            schedule.cond.notify_all()
        thread.join()
        pytest.fail(f"step {step}: the learner waited {seconds:g} s for a batch that never came")
    groups, metrics, _ = out["batch"]
    return groups, metrics


@pytest.mark.parametrize("warmup", [1, 2, 3])
def test_a_critic_warmup_as_long_as_the_staleness_bound_does_not_stop_the_run(monkeypatch, warmup):
    # PPO's warm-up trains the critic only: no policy update, no push, and admission used to wait for a version
    schedule = async_schedule("algo=ppo", f"algo.critic.warmup_steps={warmup}", "rollout.max_staleness=1",
                              monkeypatch=monkeypatch)
    per_step = schedule.per_step
    for step in range(warmup + 4):
        groups, metrics = learn(schedule, step)
        assert len(groups) == per_step and metrics["async/staleness_max"] <= 1
        if step >= warmup:  # the driver updates the policy, and pushes
            schedule.after_update(PhaseTimer())
        if step == warmup - 1:  # the pipeline is as full after the warm-up as without one: (max_staleness + 1) batches
            schedule._admit()
            assert schedule.staleness.admitted - (step + 1) * per_step == 2 * per_step


def test_dapo_in_async_tops_the_batch_up_when_every_group_is_uninformative(monkeypatch):
    # data the policy always solves: every group's rewards are equal; the synchronous sampler gives up after
    # algo.sampling.max_rounds rounds and fills the batch with dropped groups, masked out of the loss
    schedule = async_schedule("algo=dapo", "algo.sampling.max_rounds=3", informative=False, monkeypatch=monkeypatch)
    per_step = schedule.per_step
    for step in range(3):
        groups, metrics = learn(schedule, step)
        assert len(groups) == per_step and groups.topped_up == per_step
        assert metrics["sampling/uninformative_in_batch"] == per_step
        assert metrics["sampling/uninformative"] >= 3 * per_step  # the rounds were spent first
        schedule.after_update(PhaseTimer())
    # the groups that filled a batch were trained (masked), not dropped: they hold no admission slot twice
    assert schedule.staleness.admitted - schedule.staleness.retired - len(schedule.live) == 3 * per_step


def test_a_push_that_reached_no_engine_does_not_let_admission_run_ahead(monkeypatch):
    # a GPU route skips its push while a restarted engine is not started: the engines still hold the old weights
    schedule = async_schedule("rollout.max_staleness=1", reaching=(), monkeypatch=monkeypatch)
    schedule._admit()
    admitted = schedule.staleness.admitted
    schedule.after_update(PhaseTimer())
    schedule._admit()
    assert schedule.staleness.newest == 0 and schedule.staleness.admitted == admitted
    schedule.weight_sync.reaching = [0]
    schedule.after_update(PhaseTimer())
    schedule._admit()
    assert schedule.staleness.newest == 2 and schedule.staleness.admitted > admitted


def test_a_restarted_engine_starts_under_the_gpu_guard(monkeypatch):
    guard, started = threading.Lock(), []
    cfg = load_config(compose_config("output_dir=/tmp/unused", "rollout.mode=async"))
    actors = SimpleNamespace(rollouts=[SimpleNamespace()])
    sampler = SimpleNamespace(source=SingleTurn(actors))
    schedule = make_schedule(actors, cfg, sampler, Prompts(), 0, Route([0]), guard)

    def wait_for_restarts(actors, gpu_guard, only):
        started.append(gpu_guard)

    monkeypatch.setattr(rlhf.rollout.asynchronous, "wait_for_restarts", wait_for_restarts)
    schedule._engine_died(schedule.engines[0], RuntimeError("killed"))
    deadline = time.monotonic() + 5
    while not schedule.restarted and time.monotonic() < deadline:
        time.sleep(0.01)
    # vLLM's start-up on a GPU where a learner trains trips its memory accounting: the learners hold the guard
    assert started == [guard] and schedule.restarted


def test_a_synchronous_resume_of_an_async_checkpoint_refuses_to_lose_its_groups():
    cfg = load_config(compose_config("output_dir=/tmp/unused"))
    schedule = Synchronous(None, cfg, None, Prompts(), 0, Route([0]))
    schedule.load_state_dict({"step": 4, "prompts": {"cursor": 12}})  # a synchronous run's checkpoint
    schedule.load_state_dict({"step": 4, "prompts": {"cursor": 12}, "async_requeue": []})
    with pytest.raises(ValueError, match="2 groups admitted and not yet trained.*resume it with rollout.mode=async"):
        schedule.load_state_dict({"step": 4, "prompts": {"cursor": 12}, "async_requeue": [10, 11]})
