"""Scoring a rollout: every objective's rewards from the reward-function actor and the reward-model actors, side by
side, and DAPO's soft overlong punishment (a shaping term)."""

import logging

import ray
import torch

from rlhf.algorithms.reward_shaping import soft_overlong_punishment
from rlhf.config import Config
from rlhf.data import PromptBatch
from rlhf.groups import Groups
from rlhf.rewards.scoring import TrainerState

log = logging.getLogger(__name__)


def reward_columns(row_columns, episodes: bool) -> list[str]:
    """The columns `score` gives reward functions as keyword arguments: every row column but the prompt, and an
    episode's `env_reward` (the start-up check of their signatures reads them)."""
    return [name for name in row_columns if name != "prompt"] + (["env_reward"] if episodes else [])


def score(reward, reward_models: dict, batch: PromptBatch, samples: list, group_size: int,
          trainer_state: TrainerState) -> dict[str, list[float]]:
    """Objective label -> rewards of the (flat, group after group) `samples` from the reward-function actor
    (`reward`, may be None) and the reward-model actors (label -> actor), side by side; every row column is repeated
    for each sample of its group, and TRL's extras given (`completion_ids`, `trainer_state`). An episode is scored
    as TRL scores one: its prompt (with the environment's observation), its messages as the completion, its
    environment's reward in the `env_reward` column, and the episodes' environment instances as `environments`
    (sent to the reward actor by pickling: their cost is theirs); reward models read its last assistant turn."""
    repeat = lambda values: [v for v in values for _ in range(group_size)]  # noqa: E731
    columns = {key: repeat([row.get(key) for row in batch.rows]) for key in batch.rows[0] if key != "prompt"}
    prompts = repeat([row["prompt"] for row in batch.rows])
    texts = [s.text for s in samples]
    completions = texts
    extras = {"completion_ids": [s.completion_ids for s in samples], "trainer_state": trainer_state}
    if samples and hasattr(samples[0], "messages"):
        prompts, completions = [s.prompt for s in samples], [s.messages for s in samples]
        columns["env_reward"] = [s.env_reward for s in samples]
        if any(s.environment is not None for s in samples):
            extras["environments"] = [s.environment for s in samples]
    from_functions = score_remotely(reward, prompts, completions, columns, extras) if reward else None
    from_models = {label: actor.score.remote(prompts, texts) for label, actor in reward_models.items()}
    per_objective = ray.get(from_functions) if from_functions else {}
    per_objective.update(zip(from_models, ray.get(list(from_models.values()))))
    return per_objective


def score_remotely(reward, prompts, completions, columns, extras):
    """The reward actor's call. Environments that cannot be pickled reach it as None, with a warning (once): a
    reward function that reads `environments` then sees None rather than the run stopping for the ones that don't."""
    global _unpicklable_warned
    try:
        return reward.score.remote(prompts, completions, columns, extras)
    except TypeError as err:  # Ray pickles the arguments in .remote(): an environment holding a lock, a socket...
        if "environments" not in extras:
            raise
        if not _unpicklable_warned:
            _unpicklable_warned = True
            log.warning("the environments cannot be sent to the reward actor (%s: %s); reward functions get "
                        "environments=None", type(extras["environments"][0]).__name__, str(err).splitlines()[0])
        return reward.score.remote(prompts, completions, columns, {**extras, "environments": None})


_unpicklable_warned = False


def add_overlong_punishment(groups: Groups, cfg: Config) -> None:
    """DAPO's soft overlong punishment, added to the total and logged on its own (a shaping term, not an
    objective)."""
    # the model's tokens: an episode's environment tokens are not the model's length to punish
    lengths = torch.tensor([getattr(s, "model_tokens", len(s.completion_ids)) for s in groups.completions])
    budget = cfg.completion_budget()  # a turn's, or an episode's
    buffer = max(1, round(cfg.algo.sampling.overlong_fraction * budget))  # the last tokens of the budget
    penalty = soft_overlong_punishment(lengths, budget, buffer, cfg.algo.sampling.overlong_penalty).tolist()
    groups.rewards.shaping["overlong"] = penalty
    groups.rewards.total = [t + p for t, p in zip(groups.rewards.total, penalty)]
