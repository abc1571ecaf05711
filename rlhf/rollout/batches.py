"""A batch's groups as the learner's tensors, with the reference's logprobs and the critic's values."""

import ray
import torch

from actors.launch import Actors
from rlhf.experience import Experience
from rlhf.groups import Groups


def make_experience(actors: Actors, groups: Groups, pad_id: int, timer) -> Experience:
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
