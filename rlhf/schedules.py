"""When the driver's batches are generated (`rollout.mode`): a schedule hands the loop each step's groups and
experience and pushes the learner's new weights to the engines.

- `Synchronous` (sync): generate and score the step's batch, then the learner trains on it.
- `OneStepOff` (one_step_off): step n+1's rollout runs in a background thread on the previous weights while step n
  trains; the rollout correction (algo.correction) covers the one-update lag.
- `rlhf.asynchronous.Asynchronous` (async): the engines generate without pause and the learner trains on whole
  groups as they finish, within a staleness bound.

Each has `next(step, timer) -> (Groups, metrics, Experience)`, `state_dict()` (where a resume continues; read
between `next` and `prefetch`), `load_state_dict`, `prefetch(step)` (after the step's evaluation), `after_update(timer)`
(after every policy update: pushes the weights when due) and `close()`.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import ray
import torch

from actors.launch import ActorBuildError, Actors, build_failure
from actors.rollout import StaleWeightsError
from rlhf.data import PromptStream
from rlhf.experience import Experience
from rlhf.groups import Groups
from rlhf.sampling import Sampler

log = logging.getLogger(__name__)


# What a dead actor looks like to the driver (Ray restarts it unless its restarts are used up).
ACTOR_DIED = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
# ... and what a restarted engine says when asked to generate: it is back at the initial weights.
ACTOR_RESTARTED = (*ACTOR_DIED, StaleWeightsError)


def rollout_with_retries(actors: Actors, sampler: Sampler, prompts: PromptStream, step: int, pad_id: int,
                         timer: "PhaseTimer", weight_sync, fault_tolerance, version: int,
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


def wait_for_restarts(actors: Actors, timeout_s: float = 300.0, gpu_guard=nullcontext(), only=None) -> None:
    """Until every restartable actor answers; a restarted rollout actor's engine is started here, one at a time and
    under `gpu_guard` (held while the learners train, where engines share their GPU: vLLM's start-up must see no
    other allocation on it). One whose restart failed in its constructor will not come back, nor will one that has
    used its restarts (a new call to it fails at once as dead, where a restarting one waits); one that dies again
    meanwhile is waited for again. `only`: these actors, not every restartable one."""
    deadline = time.time() + timeout_s
    engines = {id(rollout) for rollout in actors.rollouts}
    for actor in only if only is not None else filter(None, actors.stateless()):
        dead_answers = 0
        while True:
            try:
                ray.get(actor.ready.remote(), timeout=max(1.0, deadline - time.time()))
                if id(actor) in engines:
                    with gpu_guard:
                        ray.get(actor.start.remote(), timeout=max(1.0, deadline - time.time()))
                break
            except ACTOR_DIED as err:
                cause = build_failure(err)
                if cause is not None:
                    raise ActorBuildError(f"an actor restarted after a crash could not be built again: {cause}") from err
                dead_answers = dead_answers + 1 if isinstance(err, ray.exceptions.ActorDiedError) else 0
                if dead_answers == 3 or time.time() > deadline:
                    raise
                time.sleep(1.0)
            except ray.exceptions.RayTaskError as err:  # the engine's own start raised
                raise ActorBuildError(f"a rollout engine restarted after a crash could not start again: "
                                      f"{type(err.cause).__name__}: {err.cause}") from err


def make_experience(actors: Actors, groups: Groups, pad_id: int, timer: "PhaseTimer") -> Experience:
    """The batch as tensors, with the reference's logprobs and the critic's values (computed side by side)."""
    experience = Experience.from_samples(groups.batch.token_ids, groups.samples, pad_id)
    experience.rewards = torch.tensor(groups.rewards.total, dtype=torch.float32)
    experience.objective_rewards = groups.rewards.objectives()
    ref_logp = actors.reference.logprobs(experience) if actors.reference else None
    values = actors.critic.call("values", experience)[0] if actors.critic else None
    with timer("reference"):
        experience.ref_logp = actors.reference.collect(ref_logp) if ref_logp else None
    with timer("values"):
        experience.values = ray.get(values) if values else None
    return experience


class PhaseTimer:
    """Wall-clock seconds per phase of a step, plus the whole step and the CPU seconds the driver process spent
    in it (all its threads: the loop, Ray's serialisation, a background rollout's bookkeeping)."""

    def __init__(self):
        self.start, self.cpu_start, self.phases = time.perf_counter(), time.process_time(), {}

    @contextmanager
    def __call__(self, name: str):
        began = time.perf_counter()
        yield
        self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - began

    def merge(self, other: "PhaseTimer") -> None:
        for name, seconds in other.phases.items():
            self.phases[name] = self.phases.get(name, 0.0) + seconds

    def seconds(self) -> dict[str, float]:
        out = {f"time/{k}": v for k, v in self.phases.items()}
        out["time/step"] = time.perf_counter() - self.start
        out["time/driver_cpu"] = time.process_time() - self.cpu_start
        return out


class Synchronous:
    """Generate and score each step's batch when the loop asks for it, on the learner's current weights."""

    def __init__(self, actors: Actors, cfg, sampler: Sampler, prompts: PromptStream, pad_id: int, weight_sync,
                 gpu_guard=nullcontext()):
        self.actors, self.cfg, self.sampler, self.prompts, self.pad_id = actors, cfg, sampler, prompts, pad_id
        self.weight_sync, self.gpu_guard = weight_sync, gpu_guard

    def next(self, step: int, timer: "PhaseTimer"):
        groups, metrics, experience = self._rollout(step, timer)
        # pushes the samples' weights are behind the learner's (1 in one-step-off-policy runs, else 0)
        metrics["weights_behind"] = self.weight_sync.version - metrics.pop("weights_version")
        return groups, metrics, experience

    def _rollout(self, step: int, timer: "PhaseTimer"):
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

    def after_update(self, timer: "PhaseTimer") -> None:
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

    def _rollout(self, step: int, timer: "PhaseTimer"):
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
        from rlhf.asynchronous import Asynchronous

        return Asynchronous(actors, cfg, sampler, prompts, pad_id, weight_sync, gpu_guard)
    schedule = OneStepOff if cfg.rollout.mode == "one_step_off" else Synchronous
    return schedule(actors, cfg, sampler, prompts, pad_id, weight_sync, gpu_guard)
