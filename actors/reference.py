"""Scores completions under the frozen reference model: one restartable actor, or ZeRO-3 ranks that shard it."""

import ray
import torch

from actors.learner_group import LearnerGroup, LearnerRank, RankDied
from rlhf.console import capture_output
from rlhf.experience import Experience
from rlhf.training.memory import building
from rlhf.training.reference import ReferenceModel


@ray.remote
class ReferenceActor(LearnerRank):
    def __init__(self, model_path: str, micro_batch_size: int, temperature: float, ranks: int, bf16: bool | None,
                 attn_implementation: str):
        capture_output()  # into <output_dir>/logs/<role>-<index>.log (rlhf/console.py)
        self.args = (model_path, micro_batch_size, temperature, bf16, attn_implementation)
        if ranks == 1:  # built here, so that a Ray restart brings it back whole
            with building():
                self.learner = ReferenceModel(*self.args)

    def build(self, rank: int, world: int):
        return ReferenceModel(*self.args, rank=rank, world=world)

    def logprobs(self, experience: Experience):
        return self.learner.logprobs(experience)

    def local_parameters(self) -> int:
        return self.learner.local_parameters()


class Reference:
    """The reference role as the driver sees it. A single actor is stateless (Ray restarts it and the step is
    redone); sharded ranks are not: like a learner rank, one that dies stops the run."""

    def __init__(self, actors: list):
        self.actors = actors
        self.group = LearnerGroup(actors) if len(actors) > 1 else None

    def logprobs(self, experience: Experience) -> list:
        """Ray references to each rank's share of the batch's logprobs, in order."""
        return [actor.logprobs.remote(experience) for actor in self.actors]

    def collect(self, refs: list) -> torch.Tensor:
        try:
            return torch.cat(ray.get(refs))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as err:
            if self.group is None:
                raise  # Ray restarts the single actor and the driver redoes the step
            raise RankDied(f"a rank of the sharded reference model died ({type(err).__name__})") from err

    def preflight(self, prompt_len: int, completion_len: int) -> list:
        return [actor.preflight.remote(prompt_len, completion_len) for actor in self.actors]

    def restartable(self) -> list:
        return [] if self.group else self.actors

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


class PolicyReference(Reference):
    """With LoRA: the policy's own ranks score the reference (the base model, adapter off), each its share. They
    are learner ranks: one that dies stops the run anyway."""

    def __init__(self, policy: LearnerGroup):
        self.policy, self.actors, self.group = policy, [], policy

    def logprobs(self, experience: Experience) -> list:
        return self.policy.call("reference_logprobs", experience)

    def preflight(self, prompt_len: int, completion_len: int) -> list:
        return []  # the policy's own pre-flight covers its forward passes

    def kill(self) -> None:
        pass  # the policy group is killed as the policy
