"""The rollout side of a step: draw prompts, take a group of samples for each from the rollout source, score every
objective, aggregate, and (DAPO) shape and filter. Produces `Groups`; the driver turns them into an `Experience`.

A rollout source turns a batch of prompt rows into G samples each: `rollout(batch, G, sampling, version, timer) ->
list[list[Sample]]` and `metrics(groups) -> dict`; for the asynchronous mode also `group(batch, G, sampling)`, one
row's group as requests streamed one by one (`start() -> requests`, `receive(key, sample) -> next requests`,
`result() -> samples once all are done`; a request is `(key, prompt tokens, SamplingSettings)`). `SingleTurn` (one
completion per sample, below) and `rlhf.agents.episodes.EpisodeRunner` (multi-turn episodes with tools and
environments) are the two; the sampler and the evaluator take whichever `rollout_source` gives them."""

import contextlib
import functools
import json
import logging
import math
import random
import time
from dataclasses import replace
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from actors.rollout import WeightsUpdatingError
from rlhf.algorithms.reward_shaping import informative_groups, soft_overlong_punishment
from rlhf.config import Config
from rlhf.data import PromptBatch, PromptStream
from rlhf.engines.base import SamplingSettings
from rlhf.groups import Groups, RewardResult, objective_matrix
from rlhf.models.folders import write_text_atomically
from rlhf.rewards.aggregation import Aggregation, reference_quantile
from rlhf.rewards.scoring import TrainerState

log = logging.getLogger(__name__)


class _NoTimer:
    """A phase timer that times nothing (work outside a step)."""

    def __call__(self, name: str):
        return contextlib.nullcontext()


NO_TIMER = _NoTimer()


class SingleTurn:
    """One completion per sample, shared among the engines."""

    def __init__(self, actors):
        self.actors = actors

    def bind(self, actors) -> None:
        self.actors = actors

    def prompt_overhead(self) -> int:
        return 0

    def rollout(self, batch: PromptBatch, group_size: int, sampling: SamplingSettings, version: int | None, timer):
        with timer("generate"):
            return generate(self.actors, batch.token_ids, group_size, sampling, version)

    def group(self, batch: PromptBatch, group_size: int, sampling: SamplingSettings) -> "SingleTurnGroup":
        return SingleTurnGroup(batch.token_ids[0], group_size, sampling)

    def metrics(self, groups) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


class SingleTurnGroup:
    """One prompt's G samples as G requests (sample j seeded `seed + j`, as vLLM seeds the j-th of n)."""

    def __init__(self, prompt_ids: list[int], size: int, sampling: SamplingSettings):
        self.prompt_ids, self.sampling, self.samples = prompt_ids, sampling, [None] * size

    def start(self) -> list[tuple]:
        seed = self.sampling.seed
        return [(j, self.prompt_ids, replace(self.sampling, seed=None if seed is None else seed + j))
                for j in range(len(self.samples))]

    def receive(self, key: int, sample) -> list[tuple]:
        self.samples[key] = sample
        return []

    def result(self) -> list | None:
        return self.samples if all(s is not None for s in self.samples) else None


def rollout_source(actors, cfg: Config, tokenizer):
    """Episodes when `env` names a factory or tools, an agent's episodes when it names `agent`, else single turns.
    `actors` may be None (`bind` them later): the driver builds the source before Ray, so an environment, tool or
    template that cannot serve is named at once."""
    if cfg.env.agent:
        from rlhf.agents.openai_agents import AgentRunner

        return AgentRunner(actors, cfg, tokenizer)
    if cfg.env.enabled:
        from rlhf.agents.episodes import EpisodeRunner

        return EpisodeRunner(actors, cfg, tokenizer)
    return SingleTurn(actors)


class Sampler:
    def __init__(self, actors, cfg: Config, aggregation: Aggregation, source):
        self.actors, self.cfg, self.aggregation, self.source = actors, cfg, aggregation, source
        self.reference_rewards = None
        self.settings = SamplingSettings(cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p)
        self.weights = torch.tensor(cfg.reward.objective_weights())

    def sample_groups(self, prompts: PromptStream, step: int, timer, version: int = 0) -> tuple[Groups, dict[str, float]]:
        """Draw prompts, generate a group of completions for each (on engines holding at least weights
        `version`), and score them.

        With DAPO's dynamic sampling, groups whose rewards are all equal (nothing to learn from) are dropped
        and more prompts drawn until the batch is full. After `algo.sampling.max_rounds` rounds the batch is
        topped up with dropped groups (logged, `Groups.topped_up`), masked out of the loss (they would count in a
        token-mean's denominator), so every step has the same number of rows.
        """
        cfg, wanted, size = self.cfg, self.cfg.prompts_per_step, self.cfg.algo.group_size
        kept, dropped = [], []
        for rounds in range(1, cfg.algo.sampling.max_rounds + 1):
            batch = prompts.next_batch(wanted)
            # seeds depend only on (seed, step, round): a resumed run samples what the first one would have
            seed = random.Random(f"{cfg.seed}/{step}/{rounds}").getrandbits(48)
            samples = self.source.rollout(batch, size, replace(self.settings, seed=seed), version, timer)
            with timer("reward"):
                groups = self.score(batch, samples, step)
            if not cfg.algo.sampling.dynamic:
                return groups, self.source.metrics(groups.samples)
            informative = self.informative(groups)
            kept.append(groups.take(i for i, keep in enumerate(informative) if keep))
            dropped.append(groups.take(i for i, keep in enumerate(informative) if not keep))
            if sum(map(len, kept)) >= wanted:
                break
        filled = max(0, wanted - sum(map(len, kept)))
        if filled:
            log.warning("dynamic sampling: %d of %d groups still uninformative after %d rounds "
                        "(algo.sampling.max_rounds); they fill the batch but take no part in the loss", filled,
                        wanted, rounds)
        groups = Groups.concat(kept + dropped).take(range(wanted))
        groups.topped_up = filled
        return groups, {"sampling/rounds": rounds, "sampling/uninformative_in_batch": filled,
                        **self.source.metrics(groups.samples)}

    def score(self, batch: PromptBatch, samples: list[list], step: int) -> Groups:
        """The groups of `batch` (samples[i] of row i) with every objective's reward, aggregated, and DAPO's overlong
        punishment when configured. `step`: the policy updates done (reward functions' `trainer_state`)."""
        groups = Groups(batch, samples, self.rewards(batch, [s for g in samples for s in g], step))
        if self.cfg.algo.sampling.overlong_fraction:
            add_overlong_punishment(groups, self.cfg)
        return groups

    def informative(self, groups: Groups) -> list[bool]:
        """DAPO's dynamic-sampling filter: False for a group whose task rewards are all equal."""
        return informative_groups(torch.tensor(groups.rewards.task()), self.cfg.algo.group_size).tolist()

    def rewards(self, batch: PromptBatch, samples: list, step: int) -> RewardResult:
        """Every objective's rewards, then their aggregation into the total the estimator sees."""
        size = len(samples) // len(batch.rows)
        labels = self.cfg.reward.objective_labels()
        per_objective = score(self.actors.reward, self.actors.reward_models, batch, samples, size,
                              TrainerState(step, self.cfg.steps))
        per_objective = {label: per_objective[label] for label in labels}
        objectives = objective_matrix(per_objective, labels)
        r_ref = None
        if self.aggregation.needs_reference_rewards:
            r_ref = torch.stack([self.reference_rewards[text] for text in batch.texts for _ in range(size)])
        total = self.aggregation.combine_rewards(objectives, self.weights, size, r_ref).tolist()
        # an episode whose agent failed (raised, hung) is unscorable, whatever its messages score
        total = [math.nan if getattr(s, "failed", None) else t for s, t in zip(samples, total)]
        return RewardResult(per_objective, total, {})

    def estimate_reference_rewards(self, prompts: PromptStream, cache: Path) -> dict[str, torch.Tensor]:
        """LSC's r_ref per prompt: the `reward.lsc.quantile` of each objective over `reward.lsc.ref_samples`
        samples of the initial policy. Covers every prompt the run can draw; cached in `cache` for resumes.
        Must run before any weight update reaches the engines."""
        lsc, labels = self.cfg.reward.lsc, self.cfg.reward.objective_labels()
        table = {}
        if cache.exists():
            table = {text: torch.tensor(v) for text, v in json.loads(cache.read_text()).items()}
        reachable = self._reachable_rows(prompts)
        needed = [i for i, text in zip(reachable, prompts.batch(reachable).texts) if text not in table]
        if needed:
            log.info("estimating LSC reference rewards for %d prompts (%d samples each)", len(needed), lsc.ref_samples)
        chunk = 8
        for start in tqdm(range(0, len(needed), chunk), desc="r_ref", disable=not self.cfg.logging.progress_bar):
            rows = needed[start : start + chunk]
            batch = prompts.batch(rows)
            seed = random.Random(f"{self.cfg.seed}/r_ref/{start}").getrandbits(48)
            samples = self.source.rollout(batch, lsc.ref_samples, replace(self.settings, seed=seed), 0, NO_TIMER)
            per_objective = score(self.actors.reward, self.actors.reward_models, batch,
                                  [s for g in samples for s in g], lsc.ref_samples, TrainerState(0, self.cfg.steps))
            objectives = objective_matrix(per_objective, labels)
            for text, block in zip(batch.texts, objectives.split(lsc.ref_samples)):
                table[text] = reference_quantile(block, lsc.quantile, lsc.estimator)
        if needed:
            write_text_atomically(cache, json.dumps({text: v.tolist() for text, v in table.items()}))
        return table


    def _reachable_rows(self, prompts: PromptStream) -> list[int]:
        """Rows the run can draw from the stream's current cursor (all rows if it may go round the data)."""
        cfg = self.cfg
        draws = cfg.steps * cfg.prompts_per_step * (cfg.algo.sampling.max_rounds if cfg.algo.sampling.dynamic else 1)
        if draws >= len(prompts):
            return list(range(len(prompts)))
        cursor = prompts.state_dict()
        reachable = sorted(set(prompts.draw(draws)))
        prompts.load_state_dict(cursor)
        return reachable


def generate(actors, prompts: list[list[int]], n: int, sampling: SamplingSettings, version: int | None = None):
    """Share the prompts among the rollout engines; results come back in prompt order. Prompt i keeps the
    seeds it would get from a single engine. `version`: the weights every engine must hold. An engine in the middle
    of a weight update (a GPU route's push from another thread) is asked again until the update is over."""
    engines = actors.rollouts
    chunk = math.ceil(len(prompts) / len(engines))
    calls = [functools.partial(engine.generate.remote, prompts[start : start + chunk], n,
                               sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + start * n),
                               version)
             for engine, start in zip(engines, range(0, len(prompts), chunk))]
    refs = [call() for call in calls]
    results = []
    for call, ref in zip(calls, refs):
        while True:
            try:
                results.append(ray.get(ref))
                break
            except WeightsUpdatingError:
                time.sleep(0.05)
                ref = call()
    return [group for part in results for group in part]


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
