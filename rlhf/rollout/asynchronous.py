"""rollout.mode=async: the engines generate without pause and the learner trains on whole groups as they finish.

A producer thread in the driver admits groups (one prompt row, G samples or episodes each), hands each group's
requests to the engine with the fewest running, steps every engine with work slice by slice (`RolloutActor.advance`,
vLLM's continuous batching: requests join and leave the running batch at any step) and, as a group's last sample
finishes, scores it into the buffer. The learner's `next` takes `prompts_per_step` groups from the buffer as soon as
they are there; weights are pushed every `rollout.push_every` updates.

Staleness. Versions count policy updates; every token carries the version of the weights that sampled it (with
partial rollouts a sample's tokens may span versions). A batch trained at update U holds no token older than
U - max_staleness. Admission control keeps that without discarding (AReaL's rule), and the learner takes the groups
due soonest and waits for a running group that later updates could not take in time: the rules are
`rlhf.rollout.staleness.Staleness`'s. A group that is still too stale when taken (possible only after an engine
restart) is discarded and counted. Groups DAPO's filter drops, and discarded ones, free their admission slots.

Correction. The learner's update is the decoupled PPO objective: the clip is centred on the proximal policy (the
learner's weights when the batch's update begins: `logp.detach()` with one update per batch, a recomputed forward
with several), and `algo.correction` weighs the gap from the behaviour policy (the engines' logprobs) to it.

Checkpoints. A checkpoint drops the groups still running or waiting: it records their prompt rows, and a resume
admits those rows first, then continues from the data cursor, so no prompt is lost or trained twice.

Engines. An engine that dies gives its unfinished groups back (their rows are admitted again first, on the others);
once Ray has restarted it and a push has brought it the current weights, it takes groups again.
"""

import logging
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import ray

from rlhf.groups import Groups
from rlhf.rollout.batches import make_experience
from rlhf.rollout.jobs import Engine, Job
from rlhf.rollout.recovery import ACTOR_DIED, wait_for_restarts
from rlhf.rollout.sampler import step_seed
from rlhf.rollout.staleness import Staleness
from rlhf.rollout.stream import HOLD_CAUSES, Request

log = logging.getLogger(__name__)


class Asynchronous:
    def __init__(self, actors, cfg, sampler, prompts, pad_id: int, weight_sync, gpu_guard):
        """`gpu_guard`: held while the learners train where engines share their GPU; a restarted engine starts
        under it (vLLM's start-up must see no other allocation on its GPU)."""
        self.actors, self.cfg, self.sampler, self.prompts, self.pad_id = actors, cfg, sampler, prompts, pad_id
        self.weight_sync, self.source, self.gpu_guard = weight_sync, sampler.source, gpu_guard
        r = cfg.rollout
        self.per_step, self.group_size = cfg.prompts_per_step, cfg.algo.group_size
        self.max_staleness, self.push_every, self.partial, self.advance_s = (r.max_staleness, r.push_every,
                                                                             r.partial_rollouts, r.advance_s)
        self.engines = [Engine(actor) for actor in actors.rollouts]
        self.cond = threading.Condition()  # guards everything below; the producer and scorers notify the learner
        self.live: dict[int, Job] = {}  # admitted and not yet trained or dropped
        self.buffer: list[Job] = []  # scored, waiting for the learner
        self.requeue: deque[int] = deque()  # rows to admit before drawing new ones (a resume's, a dead engine's)
        self.staleness = Staleness(self.per_step, self.max_staleness)  # admission and the pick
        self.uninformative: list[Job] = []  # DAPO: dropped since the last batch, the first P kept to top one up
        self.dropped_since = 0  # DAPO: groups dropped as uninformative since the last batch
        self.updates = 0  # policy updates so far
        self.pushes = {}  # weight_sync.version -> the policy version that push carried
        self.counts = Counter()  # since the last batch: admitted, discarded, uninformative, lost
        self.interrupted_before = Counter()  # the engines' interrupted requests at the last batch, by cause
        self.error: BaseException | None = None
        self.restarted = False  # an engine came back after a crash and waits for weights
        self.closing = threading.Event()
        self.producer = None
        self.scorers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="async-score")
        # what comes back is received here: an episode's turn runs its tools in this pool of its own (so a slow tool
        # holds back no group's scoring), single turns in the scorers'
        self.turns = ThreadPoolExecutor(max_workers=cfg.env.tool_workers, thread_name_prefix="async-turn") \
            if cfg.env.enabled else self.scorers
        self.last = None  # (time, each engine's busy seconds) when the learner last took a batch

    # ---- the learner's side (the driver's thread)

    def next(self, step: int, timer):
        if self.producer is None:
            self._start()
        with timer("wait_for_rollout"):
            waited = time.perf_counter()
            while True:
                with self.cond:
                    if (picked := self._pick()) is not None:
                        metrics = self._metrics(picked, time.perf_counter() - waited)
                        self._taken(step)
                        break
                    if self.error is not None:
                        raise RuntimeError(f"step {step}: the asynchronous rollout stopped: {self.error!r}") from self.error
                    restarted, self.restarted = self.restarted, False
                    if not restarted:
                        self.cond.wait(0.5)
                        continue
                # an engine is back after a restart, at its initial weights: the learner, idle, pushes the current ones
                # (the engines that stayed alive could not feed it: a regular push would never come)
                self._push()
        groups = Groups.concat([job.groups for job in picked])
        groups.topped_up = metrics["sampling/uninformative_in_batch"] if self.cfg.algo.sampling.dynamic else 0
        return groups, metrics, make_experience(self.actors, groups, self.pad_id, timer)

    def _taken(self, step: int) -> None:
        """A batch left the buffer (caller holds the lock); one the critic's warm-up took counts as a version."""
        if step < self.cfg.algo.critic.warmup_steps:
            self.staleness.warmup_batch()
            self.cond.notify_all()

    def _pick(self) -> list[Job] | None:
        """The batch for update `self.updates` (`Staleness.pick`), or None while it is not ready (caller holds the
        lock)."""
        now, rules = self.updates, self.staleness
        for job in [job for job in self.buffer if rules.too_stale(now, job.oldest)]:  # only after a restart
            self._drop(job, "discarded")
        if len(self.buffer) < self.per_step:
            return self._topped_up()
        finished = {job.number for job in self.buffer}
        running = [rules.deadline(job.admitted_at, job.oldest) for job in self.live.values()
                   if job.number not in finished]
        picked = rules.pick(now, [(rules.deadline(job.admitted_at, job.oldest), job.number) for job in self.buffer],
                            running)
        return None if picked is None else self._take([self.live[number] for number in picked], [])

    def _topped_up(self) -> list[Job] | None:
        """DAPO: once `algo.sampling.max_rounds` x P groups were scored for this batch and fewer than P are
        informative, the batch is topped up with uninformative ones (last, masked out of the loss), as the
        synchronous sampler does after its last round; None until then. It waits for no running group: at
        max_staleness 0 one may then pass its bound (counted as discarded)."""
        sampling = self.cfg.algo.sampling
        if not sampling.dynamic or len(self.buffer) + self.dropped_since < sampling.max_rounds * self.per_step:
            return None
        trained = sorted(self.buffer, key=lambda job: (job.oldest, job.number))
        fill = self.uninformative[:self.per_step - len(trained)]
        self.staleness.retire(-len(fill))  # trained after all: they hold their admission slots as trained groups do
        return self._take(trained, fill)

    def _take(self, trained: list[Job], fill: list[Job]) -> list[Job]:
        """The batch: `trained`, then the uninformative groups that `fill` it (caller holds the lock)."""
        self.buffer = [job for job in self.buffer if job not in trained]
        for job in trained:
            del self.live[job.number]
        self.counts["filled"] = len(fill)
        # the synchronous sampler forgets a step's dropped groups: a batch starts the count again
        self.uninformative, self.dropped_since = [], 0
        return trained + fill

    def _metrics(self, picked: list[Job], waited_s: float) -> dict[str, float]:
        """The batch's staleness and the stream's state since the last batch (caller holds the lock)."""
        lags = []  # of every trained token: the learner's version minus the one that sampled it
        for job in picked[:len(picked) - self.counts["filled"]]:  # the filling groups take no part in the loss
            for sample in (s for group in job.groups.samples for s in group):
                trained = getattr(sample, "model_mask", None) or [1] * len(sample.versions)
                lags += [self.updates - v for v, m in zip(sample.versions, trained) if m]
        now = time.perf_counter()
        busy = [engine.busy_s for engine in self.engines]
        began, busy_before = self.last or (self.started, [0.0] * len(busy))
        self.last = now, busy
        wall = max(now - began, 1e-9)
        metrics = {"async/staleness_mean": sum(lags) / max(len(lags), 1), "async/staleness_max": max(lags, default=0),
                   "async/buffer_depth": len(self.buffer), "async/running": len(self.live) - len(self.buffer),
                   "async/admitted": self.counts["admitted"], "async/discarded": self.counts["discarded"],
                   "async/lost": self.counts["lost"],
                   "async/learner_idle": min(waited_s / wall, 1.0),
                   "weights_behind": max(lags, default=0), "step_retries": 0}
        interrupted = sum((engine.interrupted for engine in self.engines), Counter())
        for cause in HOLD_CAUSES:  # a push, or an evaluation between two slices
            metrics[f"async/interrupted_{cause}"] = interrupted[cause] - self.interrupted_before[cause]
        if self.cfg.algo.sampling.dynamic:
            metrics["sampling/uninformative"] = self.counts["uninformative"]
            metrics["sampling/uninformative_in_batch"] = self.counts["filled"]
        for i, (b, before) in enumerate(zip(busy, busy_before)):
            metrics[f"async/engine{i}_idle"] = max(0.0, 1.0 - (b - before) / wall)
        self.counts, self.interrupted_before = Counter(), interrupted
        return {**metrics, **self.source.metrics([job.groups.samples[0] for job in picked])}

    def after_update(self, timer) -> None:
        self.updates += 1
        if self.updates % self.push_every == 0:
            with timer("weight_sync"):
                self._push()

    def _push(self) -> None:
        """The learner's weights (version `self.updates`) to every engine (the driver's thread, the learner idle)."""
        # known before the push: an engine may sample with the new weights before push() returns
        self.pushes[self.weight_sync.version + 1] = self.updates
        reached = set(self.weight_sync.push())
        with self.cond:
            # every engine that takes groups has the load call now: requests sent from here on come after it. A push
            # that skipped one (a GPU route while a restarted engine is not started) moved no engine's weights, and
            # admitting against it would let the engines run ahead of the bound
            if all(i in reached for i, e in enumerate(self.engines) if e.alive and not e.refused):
                self.staleness.pushed(self.updates)
            self.cond.notify_all()  # admission may go on

    def prefetch(self, step: int) -> None:
        pass

    def state_dict(self) -> dict:
        """The data cursor and the rows of every group admitted and not trained (a resume admits them first)."""
        with self.cond:
            unfinished = [job.row for job in sorted(self.live.values(), key=lambda job: job.number)]
            return {"prompts": self.prompts.state_dict(), "async_requeue": unfinished + list(self.requeue)}

    def load_state_dict(self, state: dict) -> None:
        self.prompts.load_state_dict(state["prompts"])
        self.requeue.extend(state.get("async_requeue", []))
        # policy updates so far: the policy trains from step algo.critic.warmup_steps on
        self.updates = max(0, state["step"] + 1 - self.cfg.algo.critic.warmup_steps)
        if self.requeue:
            log.info("async: %d groups were running or waiting at the checkpoint; their prompts are generated again "
                     "first", len(self.requeue))

    def close(self) -> None:
        self.closing.set()
        if self.producer is not None:
            self.producer.join()
        self.turns.shutdown(wait=True, cancel_futures=True)
        self.scorers.shutdown(wait=True, cancel_futures=True)

    # ---- the producer (its own thread)

    def _start(self) -> None:
        self.staleness.start(self.updates)
        self.pushes[self.weight_sync.version] = self.updates  # the weights the engines hold now
        self.started = time.perf_counter()
        self.producer = threading.Thread(target=self._produce, name="async-rollout", daemon=True)
        self.producer.start()

    def _produce(self) -> None:
        try:
            while not self.closing.is_set():
                self._admit()
                self._advance()
        except BaseException as err:  # the learner raises it
            with self.cond:
                self.error = err
                self.cond.notify_all()

    def _admit(self) -> None:
        """Admit groups while the staleness bound allows, each to the engine with the fewest requests running."""
        sends = {}
        with self.cond:
            newest = self.staleness.newest
            while self.staleness.may_admit():
                ready = [i for i, e in enumerate(self.engines) if e.alive and not e.refused]
                if not ready:
                    break
                index = min(ready, key=lambda i: self.engines[i].running)
                row = self.requeue.popleft() if self.requeue else self.prompts.draw(1)[0]
                job = self._new_job(row, index, newest)
                requests = [self._request(job, *request) for request in job.work.start()]
                if not requests:  # a group over at once (each of an agent's episodes ended before its first call)
                    job.complete = True
                    self.scorers.submit(self._guarded, self._score, job, job.work.result())
                self.engines[index].running += len(requests)
                sends.setdefault(index, []).extend(requests)
        for index, requests in sends.items():  # one call per engine: the requests join one batch
            self.engines[index].actor.submit.remote(requests, self.partial)

    def _new_job(self, row: int, engine: int, newest: int) -> Job:
        number = self.staleness.admit()
        self.counts["admitted"] += 1
        batch = self.prompts.batch([row])
        # the seed prompt i of step s gets in a synchronous run: with max_staleness 0 an async run samples exactly
        # what a synchronous one does
        step, index = divmod(number + self.staleness.base * self.per_step, self.per_step)
        seed = step_seed(self.cfg.seed, step) + index * self.group_size
        work = self.source.group(batch, self.group_size, replace(self.sampler.settings, seed=seed))
        job = Job(number, row, work, batch, engine, newest)
        self.live[number] = job
        return job

    def _request(self, job: Job, key, prompt_ids: list[int], sampling) -> Request:
        job.requests += 1
        return Request(f"{job.number}:{key}:{job.requests}", prompt_ids, sampling)

    def _advance(self) -> None:
        """Step every engine that has work for a slice; dispatch what finished."""
        for engine in self.engines:
            if engine.pending is not None or not engine.alive:
                continue
            if engine.running and not engine.refused:
                engine.pending = engine.actor.advance.remote(self.advance_s)
            elif time.monotonic() - engine.polled_at > 0.2:  # without work: did it die, has a push reached it?
                engine.polled_at = time.monotonic()
                engine.pending = engine.actor.advance.remote(0.0)
        pending = {engine.pending: engine for engine in self.engines if engine.pending is not None}
        if not pending:
            with self.cond:
                self.cond.wait(0.05)  # nothing runs: wait for a push (admission) or a scored group
            return
        ready, waiting = ray.wait(list(pending), num_returns=1, timeout=0.05)
        if ready and waiting:  # and every other engine that answered meanwhile: none waits for a later turn
            ready += ray.wait(waiting, num_returns=len(waiting), timeout=0)[0]
        for ref in ready:
            engine = pending[ref]
            engine.pending = None
            try:
                report = ray.get(ref)
            except ACTOR_DIED as err:
                self._engine_died(engine, err)
                continue
            if engine.incarnation not in (None, report.incarnation):  # restarted between two calls: its requests
                self._engine_died(engine, RuntimeError("restarted"))  # went with the old process
                continue
            with self.cond:
                engine.count(report)
                if engine.refused and report.version >= self.weight_sync.version:
                    engine.refused = False  # the current weights reached it: it takes groups again
                engine.running -= len(report.finished)
                jobs = [(self.live.get(int(request_id.split(":")[0])), int(request_id.split(":")[1]), sample)
                        for request_id, sample in report.finished]
            for job, key, sample in jobs:
                if job is not None:  # None: given back when its engine died, or dropped
                    self.turns.submit(self._guarded, self._receive, job, key, sample)

    def _guarded(self, work, *args) -> None:
        """`work(*args)` in a pool's thread; what it raises stops the run from the learner's side."""
        try:
            work(*args)
        except BaseException as err:
            with self.cond:
                self.error = err
                self.cond.notify_all()

    def _receive(self, job: Job, key: int, sample) -> None:
        """A request of `job` came back: the source's next requests (an episode's turn is answered here, its tools
        run, beside its group's other episodes: each touches only its own), or, once all are back, the group goes to
        be scored."""
        sample.versions = [self.pushes[v] for v in sample.versions]  # pushes -> policy versions
        answered = job.work.receive(key, sample)
        # the group goes to be scored once: an agent's group may have several answers come back after its last
        # episode ended, so `complete` is never set back
        with job.lock:
            requests = [self._request(job, *request) for request in answered]
            samples = None if job.complete else job.work.result()
            job.complete = job.complete or samples is not None
        if requests:
            with self.cond:
                if job.number not in self.live or not self.engines[job.engine].alive:
                    return
                self.engines[job.engine].running += len(requests)
            self.engines[job.engine].actor.submit.remote(requests, self.partial)
        elif samples is not None:
            self.scorers.submit(self._guarded, self._score, job, samples)

    def _score(self, job: Job, samples: list) -> None:
        groups = self.sampler.score(job.batch, [samples], self.updates)
        keep = not self.cfg.algo.sampling.dynamic or self.sampler.informative(groups)[0]
        with self.cond:
            if job.number not in self.live:  # given back meanwhile (its engine died)
                return
            if not keep:  # DAPO: a group whose rewards are all equal teaches nothing; its slot goes to another
                self._drop(job, "uninformative")
                self.dropped_since += 1
                if len(self.uninformative) < self.per_step:  # kept to fill a batch if the rounds run out
                    job.groups, job.oldest = groups, job.admitted_at
                    self.uninformative.append(job)
                self.cond.notify_all()
                return
            job.groups, job.oldest = groups, min(min(s.versions, default=job.admitted_at) for s in samples)
            self.buffer.append(job)
            self.cond.notify_all()

    def _drop(self, job: Job, why: str) -> None:
        """`job` leaves without training; its admission slot is freed (caller holds the lock)."""
        self.live.pop(job.number, None)
        if job in self.buffer:
            self.buffer.remove(job)
        self.staleness.retire()
        self.counts[why] += 1

    def _engine_died(self, engine: Engine, err: BaseException) -> None:
        """Its unfinished groups go back to be admitted first elsewhere; it is waited for in the background."""
        index = self.engines.index(engine)
        with self.cond:
            engine.alive, engine.running, engine.incarnation = False, 0, None  # the next report names the new process
            lost = [job for job in self.live.values() if job.engine == index and job.groups is None]
            for job in sorted(lost, key=lambda job: job.number, reverse=True):
                self._drop(job, "lost")
                self.requeue.appendleft(job.row)
        log.warning("async: rollout engine %d died (%s); its %d unfinished groups are generated again on the others",
                    index, type(err).__name__, len(lost))

        def recover():
            try:
                wait_for_restarts(self.actors, gpu_guard=self.gpu_guard, only=[engine.actor])
            except BaseException as failure:
                with self.cond:
                    self.error = failure
                    self.cond.notify_all()
                return
            with self.cond:  # back at the initial weights: it waits for a push before taking groups
                engine.alive, engine.refused, self.restarted = True, True, True
                self.cond.notify_all()

        threading.Thread(target=recover, name=f"async-recover-{index}", daemon=True).start()
