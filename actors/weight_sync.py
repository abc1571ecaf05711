"""Routes that move the learner's new weights into the rollout engines after every update.

A route has one method, `push()`, chosen by `rollout.weight_sync`:
- `shm` (CPU, tested end to end): rank 0 writes a safetensors file to shared memory, engines reload it.
- `nccl` (GPUs, split placement): rank 0 broadcasts each tensor to every engine over NCCL.
- `cuda_ipc` (GPUs, colocated): rank 0 hands each engine CUDA IPC handles of its tensors; the engine sleeps
  (frees its KV cache) while the learner trains and wakes before it loads.
The two GPU routes cannot run on this project's machines (no GPU): they are kept small, share the learner
and engine plumbing with the CPU route, and are UNTESTED.
Every learner rank takes part in a push (ZeRO-3 gathers the full weights collectively); rank 0 sends them,
tied embeddings included.
"""

import shutil
from abc import ABC, abstractmethod

import ray


class WeightSyncRoute(ABC):
    version: int = 0  # pushes so far; engines report the version they hold, so a restarted one is caught

    @abstractmethod
    def push(self) -> None:
        """Make every engine generate with the learner's current weights, and count the push in `version`."""

    def before_train(self) -> None:
        """Called before the learners train (colocated GPU routes free the engines' memory here)."""

    def close(self) -> None:
        pass


class SharedMemoryRoute(WeightSyncRoute):
    """Learner rank 0 writes one safetensors file to a folder in shared memory; each engine reloads from it.

    The folder must be visible to the learner and the engines: same node, or a shared file system.
    With `overlap` (one-step-off-policy runs) `push` returns once the file is written: each engine reloads
    after the generation it is busy with, before any later one (an actor runs its calls in the order they were
    sent), so the reload (~0.8 s on SmolLM2) leaves the step's critical path.
    """

    def __init__(self, policy, rollouts: list, folder: str, overlap: bool = False):
        """`policy`: the policy's LearnerGroup."""
        self.policy, self.rollouts, self.folder, self.overlap = policy, rollouts, folder, overlap
        self.version = 0
        self.loading = []  # reloads in flight

    def push(self) -> None:
        self.wait_for_reloads()  # the file is rewritten in place: no engine may still be reading it
        self.policy.run("save_weights", self.folder)
        self.version += 1
        self.loading = [rollout.load_weights.remote(self.folder, self.version) for rollout in self.rollouts]
        if not self.overlap:
            self.wait_for_reloads()

    def wait_for_reloads(self) -> None:
        loading, self.loading = self.loading, []
        for ref in loading:
            try:
                ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
                # the engine died: its weight version stays behind, which its next generate call reports
                # (StaleWeightsError), and the driver's retry pushes again once it is back
                if not self.overlap:
                    raise

    def close(self) -> None:
        self.wait_for_reloads()
        shutil.rmtree(self.folder, ignore_errors=True)


class NcclBroadcastRoute(WeightSyncRoute):
    """UNTESTED (needs GPUs). Learner rank 0 and every engine form one NCCL group (rank 0 = learner); each push
    sends the tensor list's metadata, then broadcasts tensor by tensor."""

    def __init__(self, policy, rollouts: list):
        self.policy, self.rollouts = policy, rollouts
        host, port = ray.get(policy.ranks[0].master_address.remote())
        world = 1 + len(rollouts)
        ray.get([policy.ranks[0].join_weight_group.remote(host, port, 0, world)]
                + [r.join_weight_group.remote(host, port, i + 1, world) for i, r in enumerate(rollouts)])

    def push(self) -> None:
        metadata = self.policy.run("weight_metadata")
        self.version += 1
        receiving = [r.receive_weights.remote(metadata, self.version) for r in self.rollouts]
        self.policy.run("broadcast_weights")
        ray.get(receiving)


class CudaIpcRoute(WeightSyncRoute):
    """UNTESTED (needs GPUs). Colocated: each engine shares its GPU with a learner rank. Rank 0 exports CUDA IPC
    handles of the full weights; engines rebuild the tensors without a copy over the network and load them.
    Engines sleep (vLLM sleep mode, KV cache released) while the learner trains."""

    def __init__(self, policy, rollouts: list):
        self.policy, self.rollouts = policy, rollouts

    def before_train(self) -> None:
        ray.get([r.sleep.remote() for r in self.rollouts])

    def push(self) -> None:
        handles = self.policy.run("ipc_handles")
        self.version += 1
        ray.get([r.wake_up.remote() for r in self.rollouts])
        ray.get([r.load_ipc_weights.remote(handles, self.version) for r in self.rollouts])


def make_route(kind: str, policy, rollouts: list, sync_dir: str, overlap: bool) -> WeightSyncRoute:
    if kind != "shm":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"rollout.weight_sync={kind} needs GPUs and none is visible; use rollout.weight_sync=shm")
    routes = {"shm": lambda: SharedMemoryRoute(policy, rollouts, sync_dir, overlap), "nccl": lambda: NcclBroadcastRoute(policy, rollouts),
              "cuda_ipc": lambda: CudaIpcRoute(policy, rollouts)}
    return routes[kind]()
