"""Routes that move the learner's new weights into the rollout engines after every update.

A route has one method, `push()`. The CPU route is below; GPU routes (NCCL broadcast from learner rank 0
for split placement, CUDA IPC for colocated engines) implement the same method and are not written yet.
Every learner rank takes part in a push (ZeRO-3 gathers the full weights collectively); rank 0 sends them.
"""

import shutil
from abc import ABC, abstractmethod

import ray


class WeightSyncRoute(ABC):
    version: int = 0  # pushes so far; engines report the version they hold, so a restarted one is caught

    @abstractmethod
    def push(self) -> None:
        """Make every engine generate with the learner's current weights, and count the push in `version`."""

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
