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
    """

    def __init__(self, policy, rollouts: list, folder: str):
        """`policy`: the policy's LearnerGroup."""
        self.policy, self.rollouts, self.folder = policy, rollouts, folder
        self.version = 0

    def push(self) -> None:
        self.policy.run("save_weights", self.folder)
        self.version += 1
        ray.get([rollout.load_weights.remote(self.folder, self.version) for rollout in self.rollouts])

    def close(self) -> None:
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


def make_route(kind: str, policy, rollouts: list, sync_dir: str) -> WeightSyncRoute:
    if kind != "shm":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"rollout.weight_sync={kind} needs GPUs and none is visible; use rollout.weight_sync=shm")
    routes = {"shm": lambda: SharedMemoryRoute(policy, rollouts, sync_dir), "nccl": lambda: NcclBroadcastRoute(policy, rollouts),
              "cuda_ipc": lambda: CudaIpcRoute(policy, rollouts)}
    return routes[kind]()
