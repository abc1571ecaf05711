"""Routes that move the learner's new weights into the rollout engines after every update.

A route has one method, `push()` (one at a time, under a lock; a route implements `transfer()`), chosen by
`rollout.weight_sync`:
- `shm` (CPU or GPU, tested on CPU): rank 0 writes a safetensors file to a folder (shared memory), engines reload it.
- `cuda_ipc` (learner and engines on one GPU): rank 0 copies the weights bucket by bucket into one CUDA buffer
  and hands each engine an IPC handle of it; the engines load straight from GPU memory.
- `nccl` (GPUs, split placement; UNTESTED): rank 0 broadcasts the weights bucket by bucket to every engine over NCCL.
- `object_store` (CPU or GPU, tested on CPU): rank 0 returns the weights into Ray's object store, engines reload
  them from memory: no shared folder needed, so learner and engines may sit on nodes without shared storage.
- `auto`: cuda_ipc when the learner's rank 0 and every engine compute on the same CUDA GPU, object_store when an
  engine is on another node than learner rank 0, else shm.
Every learner rank takes part in a push (ZeRO-3 gathers the full weights once, collectively); rank 0 sends them,
tied embeddings included. A push first pauses every engine (`RolloutActor.pause`: nothing generates on it until the
update ends; without partial rollouts its running requests run to their end first, waited for under
`rollout.drain_timeout_s`); every other wait is bounded by `rollout.sync_timeout_s`; both fail naming the route, the
engine and what it was doing. `push()` returns the engines it reached: a GPU route reaches none while an engine
restarted after a crash is not started yet. With `sleep` (vLLM sleep mode, engines sharing the learner's GPU)
`before_train` puts the engines to sleep and a push wakes their weights, loads, then wakes their KV cache: vLLM's
order for not running out of memory during an update.
"""

import logging
import shutil
import threading
import time
from abc import ABC, abstractmethod

import ray

from actors.rollout import StaleWeightsError

log = logging.getLogger(__name__)


class WeightSyncTimeout(RuntimeError):
    """An engine (or the learner) took longer than rollout.sync_timeout_s over its part of a push (or than
    rollout.drain_timeout_s to let its running requests finish first)."""


# An engine that died during a push, or restarted and is not started yet
ENGINE_GONE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, StaleWeightsError)


class WeightSyncRoute(ABC):
    name: str
    version: int = 0  # pushes so far; engines report the version they hold, so a restarted one is caught

    def __init__(self, policy, rollouts: list, timeout_s: float, drain_timeout_s: float, sleep: bool = False):
        """`policy`: the policy's LearnerGroup."""
        self.policy, self.rollouts, self.timeout_s, self.sleep = policy, rollouts, timeout_s, sleep
        self.drain_timeout_s = drain_timeout_s
        self.version = 0
        # One push at a time: in one-step-off-policy runs a retried background rollout pushes while the loop may
        # too. Interleaved, two pushes would corrupt the version and the reload list, rewrite a weight file being
        # read, and send the learner ranks their gather calls in different orders (a ZeRO-3 deadlock).
        self.lock = threading.RLock()

    def push(self) -> list[int]:
        """Make every engine generate with the learner's current weights, and count the push in `version`; the
        indices of the engines it reached (their load calls sent, or done)."""
        with self.lock:
            return self.transfer()

    @abstractmethod
    def transfer(self) -> list[int]:
        """One push (the caller holds the lock); the engines it reached."""

    def before_train(self) -> None:
        """Called before the learners train when a push follows: sleeping engines free their GPU memory."""
        if self.sleep:
            with self.lock:
                self.wait_engines([r.sleep.remote() for r in self.rollouts], "going to sleep")

    def wait_engines(self, refs: list, doing: str) -> list:
        """Each engine's answer, in engine order, within one timeout for all of them."""
        deadline = time.monotonic() + self.timeout_s
        results = []
        for index, ref in enumerate(refs):
            results.append(self.wait(ref, f"rollout engine {index}", doing, deadline))
        return results

    def wait(self, ref, who: str, doing: str, deadline: float | None = None,
             setting: str = "rollout.sync_timeout_s"):
        bound = self.drain_timeout_s if setting == "rollout.drain_timeout_s" else self.timeout_s
        deadline = deadline or time.monotonic() + bound
        try:
            return ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except ray.exceptions.GetTimeoutError:
            raise WeightSyncTimeout(f"weight sync route {self.name}: {who} did not finish {doing} within "
                                    f"{setting}={bound:g} s") from None

    def pause_engines(self, refs: list) -> None:
        """Wait for every engine's `pause`: a stream without partial rollouts first runs its requests to their end,
        which may take as long as a whole completion and has its own bound."""
        deadline = time.monotonic() + self.drain_timeout_s
        for index, ref in enumerate(refs):
            self.wait(ref, f"rollout engine {index}", DRAINING, deadline, "rollout.drain_timeout_s")

    def paused(self, send) -> None:
        """A push in several calls per engine (the GPU routes): every engine paused first, then `send()`. One that
        stops half-way leaves the engines refusing to generate until a whole push lands (`abandon_weight_update`,
        not waited for: an engine that hangs cannot answer), rather than paused for good or on half-loaded weights."""
        try:
            self.pause_engines([r.pause.remote() for r in self.rollouts])
            send()
        except BaseException:
            for rollout in self.rollouts:
                rollout.abandon_weight_update.remote()
            raise

    def every_engine_started(self) -> bool:
        """For the GPU routes, whose pushes need every engine at once: False, logged, when an engine restarted after a
        crash and has no engine yet. The driver starts it when it waits for the restart (where nothing else allocates
        on its GPU) and pushes again; meanwhile every engine is behind and refuses to generate."""
        started = self.wait_engines([r.started.remote() for r in self.rollouts], "saying whether it has started")
        if not all(started):
            log.warning("weight sync route %s: rollout engine(s) %s restarted and are not started yet: this push "
                        "reaches no engine (the next rollout starts them and pushes again)", self.name,
                        [i for i, s in enumerate(started) if not s])
        return all(started)

    def run_learners(self, method: str, *args, doing: str):
        """`method` on every learner rank (a ZeRO-3 gather needs them all); rank 0's answer."""
        deadline = time.monotonic() + self.timeout_s
        return [self.wait(ref, f"policy rank {rank}", doing, deadline)
                for rank, ref in enumerate(self.policy.call(method, *args))][0]

    def close(self) -> None:
        pass


DRAINING = ("its running requests before a weight update (rollout.partial_rollouts=false: a push lets them finish "
            "on the old weights; raise rollout.drain_timeout_s, or set rollout.partial_rollouts=true)")


class ReloadingRoute(WeightSyncRoute):
    """A route where learner rank 0 publishes the full weights once and each engine reloads them whole.

    With `overlap` (one-step-off-policy and async runs) `push` returns once the weights are published: each engine
    reloads after the generation it is busy with, before any later one (an actor runs its calls in the order they were
    sent), so the reload (~0.8 s on SmolLM2) leaves the step's critical path. The next push first waits for those
    reloads (and reports their failures).
    """

    load_method: str  # the rollout actor's method that takes what `publish` returns, and the version

    def __init__(self, policy, rollouts: list, timeout_s: float, drain_timeout_s: float, overlap: bool = False,
                 sleep: bool = False):
        super().__init__(policy, rollouts, timeout_s, drain_timeout_s, sleep)
        self.overlap = overlap
        self.loading = []  # reloads in flight: (engine index, its pause call, its load calls)

    @abstractmethod
    def publish(self):
        """Make the learner's current weights readable by the engines; returns what their load method takes."""

    def transfer(self) -> list[int]:
        self.wait_for_reloads()
        weights = self.publish()
        self.version += 1
        self.loading = [(index, rollout.pause.remote(), self.reload(rollout, weights))
                        for index, rollout in enumerate(self.rollouts)]
        if self.overlap:
            return list(range(len(self.rollouts)))  # the load calls are sent: each engine's next call comes after
        failed = self.wait_for_reloads()
        return [index for index in range(len(self.rollouts)) if index not in failed]

    def reload(self, rollout, weights) -> list:
        """The engine's reload calls, in the order the actor runs them: its weights woken first and its KV cache
        after when it sleeps."""
        calls = [rollout.wake_up.remote(["weights"])] if self.sleep else []
        calls.append(getattr(rollout, self.load_method).remote(weights, self.version))
        return calls + ([rollout.wake_up.remote(["kv_cache"])] if self.sleep else [])

    def wait_for_reloads(self) -> set[int]:
        """Wait for the reloads in flight: every pause under the drain bound, then the loads; the engines that died
        or are not started."""
        loading, self.loading, failed = self.loading, [], set()
        drained_by = time.monotonic() + self.drain_timeout_s
        for index, pause, _ in loading:
            if self._gone(index, [pause], DRAINING, drained_by, "rollout.drain_timeout_s"):
                failed.add(index)
        deadline = time.monotonic() + self.timeout_s
        for index, _, calls in loading:
            if index not in failed and self._gone(index, calls, "reloading the weights", deadline):
                failed.add(index)
        return failed

    def _gone(self, index: int, refs: list, doing: str, deadline: float, setting: str = "rollout.sync_timeout_s"):
        """Wait for an engine's calls; True when it died (or restarted and is not started yet): its weight version
        stays behind, which its next generate call reports, and the driver's retry starts it and pushes again."""
        try:
            for ref in refs:
                self.wait(ref, f"rollout engine {index}", doing, deadline, setting)
        except ENGINE_GONE as err:
            log.warning("weight sync route %s: rollout engine %d died during a push or is not started after a "
                        "restart (%s); the next rollout waits for it and pushes again", self.name, index,
                        type(err).__name__)
            return True
        return False

    def close(self) -> None:
        with self.lock:
            self.wait_for_reloads()


class SharedMemoryRoute(ReloadingRoute):
    """Learner rank 0 writes one safetensors file to a folder in shared memory (rewritten in place at every push, so
    the previous reloads must be done first); each engine reloads from it. The folder must be visible to the
    learner and the engines: same node, or a shared file system. Learner rank 0 names it (its host, boot and
    process: `rlhf/training/sync_folders.py`) and removes it, on its own node: the driver may be on another one."""

    name, load_method = "shm", "load_weights"

    def __init__(self, policy, rollouts: list, sync_dir: str, timeout_s: float, drain_timeout_s: float,
                 overlap: bool = False, sleep: bool = False):
        super().__init__(policy, rollouts, timeout_s, drain_timeout_s, overlap, sleep)
        self.folder = self.wait(policy.ranks[0].new_weight_folder.remote(sync_dir), "policy rank 0",
                                "naming the weight folder")

    def publish(self) -> str:
        self.run_learners("save_weights", self.folder, doing="writing the weight file")
        return self.folder

    def close(self) -> None:
        try:
            super().close()
        finally:
            try:
                self.wait(self.policy.ranks[0].remove_weight_folder.remote(self.folder), "policy rank 0",
                          "removing the weight folder")
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, WeightSyncTimeout) as err:
                # a dead rank 0 cannot: the next run on its host removes folders of ended processes
                log.warning("weight sync route shm: %s not removed by policy rank 0 (%s); removing it from here",
                            self.folder, type(err).__name__)
                shutil.rmtree(self.folder, ignore_errors=True)


class ObjectStoreRoute(ReloadingRoute):
    """Learner rank 0 returns its full weights (CPU tensors) into Ray's object store; each engine's load call takes
    that object, which Ray brings to the engine's node (read in place on the learner's node), and reloads from
    memory. Needs no folder that learner and engines share, so it works across nodes without shared storage."""

    name, load_method = "object_store", "load_state"

    def publish(self):
        refs = self.policy.call("export_weights")  # every rank: a ZeRO-3 gather needs them all
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)
        if len(ready) < len(refs):
            late = next(rank for rank, ref in enumerate(refs) if ref not in ready)
            raise WeightSyncTimeout(f"weight sync route {self.name}: policy rank {late} did not finish exporting "
                                    f"the weights within rollout.sync_timeout_s={self.timeout_s:g} s")
        return refs[0]  # a reference: the driver never holds the weights


class CudaIpcRoute(WeightSyncRoute):
    """Learner and engines on one GPU. Every learner rank gathers the weights once; rank 0 packs them bucket by bucket
    (`rollout.sync_bucket_mb`) into one CUDA buffer and exports it as an IPC handle keyed by the GPU's UUID; each
    engine maps the buffer and loads the bucket (vLLM through its IPC weight-transfer engine) before the next one is
    packed. The engine's version moves only once every bucket is in."""

    name = "cuda_ipc"

    def __init__(self, policy, rollouts: list, timeout_s: float, drain_timeout_s: float, bucket_mb: float,
                 sleep: bool = False):
        super().__init__(policy, rollouts, timeout_s, drain_timeout_s, sleep)
        self.bucket_bytes = int(bucket_mb * 1024**2)

    def transfer(self) -> list[int]:
        self.version += 1  # counted even when skipped: engines left behind then refuse to generate
        if not self.every_engine_started():
            return []
        self.paused(self.send)
        return list(range(len(self.rollouts)))

    def send(self) -> None:
        sender = self.policy.ranks[0]
        count = self.run_learners("prepare_ipc_push", self.bucket_bytes, doing="gathering the weights")
        try:
            if self.sleep:
                self.wait_engines([r.wake_up.remote(["weights"]) for r in self.rollouts], "waking its weights")
            self.wait_engines([r.begin_weight_update.remote() for r in self.rollouts], "starting a weight update")
            for index in range(count):
                bucket = self.wait(sender.ipc_bucket.remote(index), "policy rank 0", f"packing bucket {index}")
                self.wait_engines([r.load_bucket.remote(bucket) for r in self.rollouts],
                                  f"loading bucket {index + 1} of {count}")
            self.wait_engines([r.finish_weight_update.remote(self.version) for r in self.rollouts],
                              "finishing the weight update")
            if self.sleep:
                self.wait_engines([r.wake_up.remote(["kv_cache"]) for r in self.rollouts], "waking its KV cache")
        finally:
            self.wait(sender.finish_ipc_push.remote(), "policy rank 0", "releasing the IPC buffer")


class NcclBroadcastRoute(WeightSyncRoute):
    """UNTESTED (needs two GPUs: NCCL cannot join two processes on one). Engines on other GPUs or nodes. Learner
    rank 0 and every engine form one NCCL group (rank 0 = learner; vLLM joins through its NCCL weight-transfer
    engine). Every learner rank gathers the weights once per push; rank 0 broadcasts them bucket by bucket
    (`rollout.sync_bucket_mb`, one packed buffer each) while the engines receive. Each bucket's broadcast is waited
    for under the timeout, so a hung collective becomes an error naming the route, the engine and the bucket.
    Learner and engine actors run with NCCL_CUMEM_ENABLE=0, which a group shared with vLLM needs.
    A restarted engine is a new process outside the group, and an NCCL group takes no new member: the next push
    finds it out (`in_weight_group`), every member leaves and the group is formed again at a fresh rendezvous."""

    name = "nccl"

    def __init__(self, policy, rollouts: list, timeout_s: float, drain_timeout_s: float, bucket_mb: float,
                 tensor_parallel_size: int = 1):
        super().__init__(policy, rollouts, timeout_s, drain_timeout_s)
        self.bucket_bytes = int(bucket_mb * 1024**2)
        self.tensor_parallel_size = tensor_parallel_size
        self.form_group()

    def form_group(self) -> None:
        sender = self.policy.ranks[0]
        host, port = self.wait(sender.master_address.remote(), "policy rank 0", "choosing the NCCL rendezvous")
        tp = self.tensor_parallel_size  # each engine's workers take tp consecutive ranks after the learner's 0
        world = 1 + len(self.rollouts) * tp
        joining = [sender.join_weight_group.remote(host, port, 0, world)]  # all at once: the rendezvous waits for all
        joining += [r.join_weight_group.remote(host, port, 1 + i * tp, world, self.bucket_bytes)
                    for i, r in enumerate(self.rollouts)]
        self.wait(joining[0], "policy rank 0", "joining the NCCL weight group")
        self.wait_engines(joining[1:], "joining the NCCL weight group")

    def reform_if_an_engine_restarted(self) -> None:
        members = self.wait_engines([r.in_weight_group.remote() for r in self.rollouts], "naming its group")
        if all(members):
            return
        log.warning("weight sync route nccl: rollout engine(s) %s restarted; forming the NCCL group again",
                    [i for i, member in enumerate(members) if not member])
        self.wait_engines([r.leave_weight_group.remote() for r, m in zip(self.rollouts, members) if m],
                          "leaving the NCCL weight group")
        self.wait(self.policy.ranks[0].leave_weight_group.remote(), "policy rank 0", "leaving the NCCL weight group")
        self.form_group()

    def transfer(self) -> list[int]:
        self.version += 1  # counted even when skipped: engines left behind then refuse to generate
        if not self.every_engine_started():
            return []
        self.reform_if_an_engine_restarted()
        self.paused(self.send)
        return list(range(len(self.rollouts)))

    def send(self) -> None:
        sender = self.policy.ranks[0]
        buckets = self.run_learners("prepare_nccl_push", self.bucket_bytes, doing="gathering the weights")
        try:
            self.wait_engines([r.begin_weight_update.remote() for r in self.rollouts], "starting a weight update")
            for index, bucket in enumerate(buckets):
                receiving = [r.receive_bucket.remote(bucket) for r in self.rollouts]
                doing = f"the broadcast of bucket {index + 1} of {len(buckets)}"
                self.wait(sender.broadcast_bucket.remote(index), "policy rank 0", doing)
                self.wait_engines(receiving, doing)
            self.wait_engines([r.finish_weight_update.remote(self.version) for r in self.rollouts],
                              "finishing the weight update")
        finally:
            self.wait(sender.finish_nccl_push.remote(), "policy rank 0", "releasing the gathered weights")


def pick_route(kind: str, learner: dict, engines: list[dict], tensor_parallel_size: int = 1) -> str:
    """The route for `kind` given where learner rank 0 and the engines compute (`device_info` of each); refuses a
    GPU route whose actors are not where it needs them, naming them. `auto`: cuda_ipc when all share the learner's
    GPU, object_store when an engine is on another node (no shared folder needed), else shm. A tensor-parallel
    engine spans several GPUs (never only the learner's): shm on the learner's node, object_store elsewhere (its
    actor stages the weights in its own node's shared memory for its workers)."""
    on_learners_gpu = (tensor_parallel_size == 1 and learner["gpu_uuid"] is not None
                       and all(e["gpu_uuid"] == learner["gpu_uuid"] for e in engines))
    if kind == "auto":
        if on_learners_gpu:
            return "cuda_ipc"
        return "object_store" if any(e["node"] != learner["node"] for e in engines) else "shm"
    if kind == "cuda_ipc" and not on_learners_gpu:
        where = "; ".join([f"policy rank 0 on {_where(learner)}"] +
                          [f"rollout engine {i} on {_where(e)}" for i, e in enumerate(engines)])
        raise RuntimeError(f"rollout.weight_sync=cuda_ipc needs learner rank 0 and every engine computing on one CUDA "
                           f"GPU, but: {where}. Give them GPU shares of one GPU (placement=single_gpu) or use "
                           "rollout.weight_sync=shm (or auto)")
    if kind == "nccl":
        off_gpu = [name for name, info in [("policy rank 0", learner)] + [(f"rollout engine {i}", e)
                   for i, e in enumerate(engines)] if info["gpu_uuid"] is None]
        if off_gpu:
            raise RuntimeError(f"rollout.weight_sync=nccl needs GPUs, but {', '.join(off_gpu)} compute on the CPU; "
                               "use rollout.weight_sync=shm (or auto)")
    return kind


def _where(info: dict) -> str:
    return f"GPU {info['gpu_uuid']}" if info["gpu_uuid"] else f"the CPU (Ray GPU ids {info['gpu_ids'] or 'none'})"


def make_route(kind: str, policy, rollouts: list, sync_dir: str, overlap: bool, timeout_s: float,
               drain_timeout_s: float, bucket_mb: float, sleep: bool, tensor_parallel_size: int = 1) -> WeightSyncRoute:
    learner = ray.get(policy.ranks[0].device_info.remote(), timeout=timeout_s)
    engines = ray.get([r.device_info.remote() for r in rollouts], timeout=timeout_s)
    chosen = pick_route(kind, learner, engines, tensor_parallel_size)
    log.info("weight sync: %s%s", chosen, f" (rollout.weight_sync={kind})" if kind != chosen else "")
    if chosen == "cuda_ipc":
        return CudaIpcRoute(policy, rollouts, timeout_s, drain_timeout_s, bucket_mb, sleep)
    if chosen == "nccl":
        return NcclBroadcastRoute(policy, rollouts, timeout_s, drain_timeout_s, bucket_mb, tensor_parallel_size)
    if chosen == "object_store":
        return ObjectStoreRoute(policy, rollouts, timeout_s, drain_timeout_s, overlap, sleep)
    return SharedMemoryRoute(policy, rollouts, sync_dir, timeout_s, drain_timeout_s, overlap, sleep)
