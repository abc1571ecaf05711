"""The DeepSpeed ranks of one model (the policy or critic learner, or a sharded reference) as one object.

Every rank gets every call: DeepSpeed's collectives (gradient all-reduce, ZeRO-3 parameter gathers) need all
ranks in step. Each rank trains on its share of a batch and reports its share of each metric; `reduce`
adds the shares up.
"""

import os
import socket

import ray

from rlhf.training.memory import building

# Metrics every rank holds in full (not shares): taken from rank 0.
REPLICATED = {"grad_norm", "lr", "critic/grad_norm", "critic/lr", "critic/explained_variance"}


class RankDied(RuntimeError):
    """A rank of a DeepSpeed group died: the others cannot go on without it, and Ray cannot restart it alone."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class LearnerRank:
    """Mixed into the policy and critic actors: join the ranks' process group, then build the learner."""

    def master_address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), free_port()

    def node_ip(self) -> str:
        return ray.util.get_node_ip_address()

    def setup(self, address: str, port: int, rank: int, local_rank: int, world: int) -> None:
        # Ray shows an actor only its own GPU (as cuda:0), and DeepSpeed puts a rank on cuda:LOCAL_RANK: on GPUs
        # every rank is local rank 0 of what it can see
        local_rank = 0 if ray.get_gpu_ids() else local_rank
        os.environ.update({"MASTER_ADDR": address, "MASTER_PORT": str(port), "RANK": str(rank),
                           "WORLD_SIZE": str(world), "LOCAL_RANK": str(local_rank)})
        with building():
            self.learner = self.build(rank, world)

    def device_info(self) -> dict:
        from rlhf.training.memory import device_info

        return device_info(self.learner.device)

    def build(self, rank: int, world: int):
        raise NotImplementedError

    def train_step(self, experience):
        return self.learner.train_step(experience)

    def save_checkpoint(self, folder: str) -> None:
        self.learner.save_checkpoint(folder)

    def load_checkpoint(self, folder: str) -> None:
        self.learner.load_checkpoint(folder)

    def preflight(self, prompt_len: int, completion_len: int) -> dict:
        return self.learner.preflight(prompt_len, completion_len)

    def ready(self) -> bool:
        return True


class LearnerGroup:
    def __init__(self, ranks: list):
        """`ranks`: actor handles of a LearnerRank class, created but not yet set up."""
        self.ranks = ranks
        address, port = ray.get(ranks[0].master_address.remote())
        ips = ray.get([r.node_ip.remote() for r in ranks])
        local = [ips[:i].count(ip) for i, ip in enumerate(ips)]
        ray.get([r.setup.remote(address, port, i, local[i], len(ranks)) for i, r in enumerate(ranks)])

    def call(self, method: str, *args) -> list:
        """Start `method` on every rank; returns the Ray references, rank 0 first."""
        return [getattr(rank, method).remote(*args) for rank in self.ranks]

    def run(self, method: str, *args):
        """Run `method` on every rank and return rank 0's answer."""
        return ray.get(self.call(method, *args))[0]

    @staticmethod
    def reduce(per_rank: list[dict]) -> dict[str, float]:
        """One figure per metric: rank 0's for those every rank holds, the slowest rank's for times (the ranks
        run side by side), the ranks' max (min) of a `_max` (`_min`) metric, the sum of the ranks' shares for the
        rest."""
        def combine(key: str) -> float:
            values = [m[key] for m in per_rank if key in m]  # an extreme only where a rank had tokens
            if key in REPLICATED:
                return values[0]
            if key.startswith("time/") or key.endswith("_max"):
                return max(values)
            return min(values) if key.endswith("_min") else sum(values)

        return {key: combine(key) for key in dict.fromkeys(k for m in per_rank for k in m)}

    def kill(self) -> None:
        for rank in self.ranks:
            ray.kill(rank)
