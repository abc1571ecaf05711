"""When the driver's batches are generated (`rollout.mode`): a schedule hands the loop each step's groups and
experience and pushes the learner's new weights to the engines.

- `Synchronous` (sync): generate and score the step's batch, then the learner trains on it.
- `OneStepOff` (one_step_off): step n+1's rollout runs in a background thread on the previous weights while step n
  trains; the rollout correction (algo.correction) covers the one-update lag.
- `rlhf.rollout.asynchronous.Asynchronous` (async): the engines generate without pause and the learner trains on whole
  groups as they finish, within a staleness bound (`rlhf.rollout.staleness`).

Each is a `Schedule`: `next(step, timer) -> (Groups, metrics, Experience)`, `state_dict()` (where a resume continues;
read between `next` and `prefetch`), `load_state_dict`, `prefetch(step)` (after the step's evaluation),
`after_update(timer)` (after every policy update: pushes the weights when due) and `close()`.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Protocol

from actors.launch import Actors
from rlhf.data import PromptStream
from rlhf.experience import Experience
from rlhf.groups import Groups
from rlhf.rollout.asynchronous import Asynchronous
from rlhf.rollout.batches import make_experience
from rlhf.rollout.recovery import ACTOR_RESTARTED, wait_for_restarts
from rlhf.rollout.sampler import Sampler
from rlhf.rollout.timing import PhaseTimer

log = logging.getLogger(__name__)


class Schedule(Protocol):
    def next(self, step: int, timer: PhaseTimer) -> tuple[Groups, dict, Experience]:
        """The step's groups, their metrics and their experience."""

    def state_dict(self) -> dict:
        """Where a resume continues."""

    def load_state_dict(self, state: dict) -> None:
        ...

    def prefetch(self, step: int) -> None:
        """After the step's evaluation (one-step-off: the next step's rollout starts)."""

    def after_update(self, timer: PhaseTimer) -> None:
        """After every policy update: the weight push, when due."""

    def close(self) -> None:
        ...


def rollout_with_retries(actors: Actors, sampler: Sampler, prompts: PromptStream, step: int, pad_id: int,
                         timer: PhaseTimer, weight_sync, fault_tolerance, version: int,
                         gpu_guard=nullcontext()):
    """Generate, score and build the experience. If a rollout, reward or reference actor dies meanwhile, wait
    for Ray to restart it (`wait_for_restarts`), push the current weights (a restarted engine starts from the
    initial ones), rewind the prompt stream and redo the step, at most `fault_tolerance.max_step_retries` times.
    `version`: the weights the engines must hold at least."""
    cursor = prompts.state_dict()
    for attempt in range(fault_tolerance.max_step_retries + 1):
        try:
            groups, sampling_metrics = sampler.sample_groups(prompts, step, timer, version)
            experience = make_experience(actors, groups, pad_id, timer)
            return groups, {**sampling_metrics, "step_retries": attempt, "weights_version": version}, experience
        except ACTOR_RESTARTED as err:
            if attempt == fault_tolerance.max_step_retries:
                raise RuntimeError(f"step {step}: an actor died {attempt + 1} times in a row "
                                   f"(fault_tolerance.max_step_retries={fault_tolerance.max_step_retries}): {err}") from err
            log.warning("step %d: an actor died (%s); waiting for its restart, then redoing the step (retry %d of %d)",
                        step, type(err).__name__, attempt + 1, fault_tolerance.max_step_retries)
            wait_for_restarts(actors, gpu_guard=gpu_guard)
            weight_sync.push()
            version = weight_sync.version
            prompts.load_state_dict(cursor)


class Synchronous:
    """Generate and score each step's batch when the loop asks for it, on the learner's current weights."""

    def __init__(self, actors: Actors, cfg, sampler: Sampler, prompts: PromptStream, pad_id: int, weight_sync,
                 gpu_guard=nullcontext()):
        self.actors, self.cfg, self.sampler, self.prompts, self.pad_id = actors, cfg, sampler, prompts, pad_id
        self.weight_sync, self.gpu_guard = weight_sync, gpu_guard

    def next(self, step: int, timer: PhaseTimer):
        groups, metrics, experience = self._rollout(step, timer)
        # pushes the samples' weights are behind the learner's (1 in one-step-off-policy runs, else 0)
        metrics["weights_behind"] = self.weight_sync.version - metrics.pop("weights_version")
        return groups, metrics, experience

    def _rollout(self, step: int, timer: PhaseTimer):
        return rollout_with_retries(self.actors, self.sampler, self.prompts, step, self.pad_id, timer,
                                    self.weight_sync, self.cfg.fault_tolerance, self.weight_sync.version,
                                    self.gpu_guard)

    def state_dict(self) -> dict:
        """Where a resume continues: before the next step's draws."""
        return {"prompts": self.prompts.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        unfinished = state.get("async_requeue")  # absent from the checkpoints of synchronous runs
        if unfinished:
            raise ValueError(f"this checkpoint was written by a rollout.mode=async run with {len(unfinished)} "
                             "groups admitted and not yet trained (async_requeue in driver.json): a "
                             f"rollout.mode={self.cfg.rollout.mode} resume would never train their prompts; resume it "
                             "with rollout.mode=async")
        self.prompts.load_state_dict(state["prompts"])

    def prefetch(self, step: int) -> None:
        pass

    def after_update(self, timer: PhaseTimer) -> None:
        with timer("weight_sync"):
            self.weight_sync.push()

    def close(self) -> None:
        pass


class OneStepOff(Synchronous):
    """The next step's rollout (generation, scoring, reference) runs in a background thread on the previous weights
    while this step trains; its phase times are merged into the step that uses it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.background = ThreadPoolExecutor(max_workers=1)
        self.pending = None  # (future, its timer)

    def _rollout(self, step: int, timer: PhaseTimer):
        if self.pending is None:
            return super()._rollout(step, timer)
        (future, background_timer), self.pending = self.pending, None
        with timer("wait_for_rollout"):
            result = future.result()
        timer.merge(background_timer)
        return result

    def prefetch(self, step: int) -> None:
        if step + 1 < self.cfg.steps:
            timer = PhaseTimer()
            self.pending = self.background.submit(super()._rollout, step + 1, timer), timer

    def close(self) -> None:
        self.background.shutdown(wait=True, cancel_futures=True)


def make_schedule(actors: Actors, cfg, sampler: Sampler, prompts: PromptStream, pad_id: int, weight_sync,
                  gpu_guard=nullcontext()):
    if cfg.rollout.mode == "async":
        return Asynchronous(actors, cfg, sampler, prompts, pad_id, weight_sync, gpu_guard)
    schedule = OneStepOff if cfg.rollout.mode == "one_step_off" else Synchronous
    return schedule(actors, cfg, sampler, prompts, pad_id, weight_sync, gpu_guard)
