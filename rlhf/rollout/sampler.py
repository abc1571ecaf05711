"""The rollout side of a batch schedule's step: draw prompts, take a group of samples for each from the rollout source,
score every objective, aggregate, and (DAPO) shape and filter. Produces `Groups`; the schedule turns them into an
`Experience`. The asynchronous schedule uses its seeds (`step_seed`), its scoring and its filter group by group."""

import json
import logging
import math
import random
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from rlhf.algorithms.reward_shaping import informative_groups
from rlhf.config import Config
from rlhf.data import PromptBatch, PromptStream
from rlhf.engines.base import SamplingSettings
from rlhf.groups import Groups, RewardResult, objective_matrix
from rlhf.models.folders import write_text_atomically
from rlhf.rewards.aggregation import Aggregation, reference_quantile
from rlhf.rewards.scoring import TrainerState
from rlhf.rollout.scoring import add_overlong_punishment, score
from rlhf.rollout.timing import NO_TIMER

log = logging.getLogger(__name__)


def step_seed(seed: int, step: int, rounds: int = 1) -> int:
    """The sampling seed of a step's round (prompt i of it gets `+ i * G`). It depends only on (seed, step, round):
    a resumed run samples what the first one would have, and an async run's group n gets prompt `n mod P`'s of step
    `n div P`."""
    return random.Random(f"{seed}/{step}/{rounds}").getrandbits(48)


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
            seed = step_seed(cfg.seed, step, rounds)
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
        samples of the initial policy (after a warm start the warm-started one). Covers every prompt the run can draw;
        cached in `cache` for resumes. Must run before any RL update reaches the engines."""
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
