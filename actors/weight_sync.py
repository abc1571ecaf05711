"""Routes that move the learner's new weights into the rollout engines after every update.

A route has one method, `push()`. The CPU route is below; GPU routes (NCCL broadcast from learner rank 0
for split placement, CUDA IPC for colocated engines) implement the same method and are not written yet.
"""

import shutil
from abc import ABC, abstractmethod

import ray


class WeightSyncRoute(ABC):
    @abstractmethod
    def push(self) -> None:
        """Make every engine generate with the learner's current weights."""

    def close(self) -> None:
        pass


class SharedMemoryRoute(WeightSyncRoute):
    """Learner rank 0 writes one safetensors file to a folder in shared memory; each engine reloads from it.

    The folder must be visible to the learner and the engines: same node, or a shared file system.
    """

    def __init__(self, policy, rollouts: list, folder: str):
        self.policy, self.rollouts, self.folder = policy, rollouts, folder

    def push(self) -> None:
        ray.get(self.policy.save_weights.remote(self.folder))
        ray.get([rollout.load_weights.remote(self.folder) for rollout in self.rollouts])

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
