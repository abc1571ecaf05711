"""Evaluation during training: held-out prompts generated on the rollout engines with the current weights (no
extra model copy), scored by the run's objectives each on its own (or by `eval.rewards`).

Metrics: `eval/<objective>` (mean@k: the mean over every completion), `eval/pass@1` and `eval/pass@k` (k =
`eval.samples`; a completion passes when the `eval.pass_objective` reward reaches `eval.pass_threshold` or the reward's
own threshold; none where the objective defines no passing, rlhf/passing.py), and `eval/length` (completion tokens). `eval_samples.jsonl` holds the last evaluation, prompt by prompt."""

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import ray

from rlhf.config import Config
from rlhf.data import PromptBatch
from rlhf.engines.base import SamplingSettings
from rlhf.models.folders import write_text_atomically
from rlhf.passing import pass_rule
from rlhf.rewards.scoring import TrainerState
from rlhf.rollout.scoring import score
from rlhf.rollout.timing import NO_TIMER


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The chance that at least one of k completions drawn without replacement from n, of which `correct`
    pass, passes: 1 - C(n - c, k) / C(n, k) (Chen et al. 2021's unbiased estimator)."""
    if not 0 < k <= n or not 0 <= correct <= n:
        raise ValueError(f"pass@k needs 0 < k <= n and 0 <= correct <= n, got n={n}, correct={correct}, k={k}")
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def due(step: int, cfg: Config) -> bool:
    """Whether the weights of `step` (the ones its rollout samples; `steps`: the final ones, always evaluated: the
    figure a user reads last) are evaluated."""
    return cfg.eval.every > 0 and (step % cfg.eval.every == 0 or step == cfg.steps) and step <= cfg.steps


class Evaluator:
    def __init__(self, actors, cfg: Config, prompts: PromptBatch, source):
        """`source`: the run's rollout source (single turns or episodes, rlhf/rollout/sources.py)."""
        self.actors, self.cfg, self.prompts, self.source = actors, cfg, prompts, source
        e = cfg.eval
        self.labels = e.objective_labels(cfg.reward)
        self.passing = pass_rule(cfg)  # with no threshold, no pass@k is logged
        self.settings = SamplingSettings(e.max_new_tokens or cfg.rollout.max_new_tokens, e.temperature, 1.0,
                                         greedy=e.greedy)

    def evaluate(self, step: int, version: int, output_dir: Path) -> dict[str, float]:
        """Generate on engines holding weights `version`, score, write `eval_samples.jsonl`; return the metrics.
        Seeds depend only on (seed, step): a resumed run evaluates as the uninterrupted one did."""
        k, batch = self.cfg.eval.samples, self.prompts
        seed = random.Random(f"{self.cfg.seed}/eval/{step}").getrandbits(48)
        groups = self.source.rollout(batch, k, replace(self.settings, seed=seed), version, NO_TIMER)
        samples = [s for group in groups for s in group]
        if self.actors.eval_reward is not None:  # eval.rewards: its own functions
            rewards = score(self.actors.eval_reward, {}, batch, samples, k, TrainerState(step, self.cfg.steps))
        else:
            rewards = score(self.actors.reward, self.actors.reward_models, batch, samples, k,
                            TrainerState(step, self.cfg.steps))
        rewards = {label: rewards[label] for label in self.labels}
        scorer = self.actors.eval_reward or self.actors.reward
        logged = ray.get(scorer.drain_logs.remote())[0] if scorer is not None else {}  # TRL's log_metric, at eval
        metrics = {f"eval/{label}": _mean(values) for label, values in rewards.items()}
        metrics.update({f"eval/{name}": value for name, value in logged.items()})
        passed = None
        if self.passing.threshold is not None:
            rule = self.passing
            passed = [[value is not None and not math.isnan(value) and value >= rule.threshold
                       for value in rewards[rule.objective][i * k : (i + 1) * k]] for i in range(len(groups))]
            for at in sorted({1, k}):
                metrics[f"eval/pass@{at}"] = sum(pass_at_k(k, sum(p), at) for p in passed) / len(passed)
        metrics["eval/length"] = sum(len(s.completion_ids) for s in samples) / len(samples)
        metrics.update({f"eval/{name.removeprefix('rollout/')}": value for name, value in self.source.metrics(groups).items()})
        rows = [{"step": step, "prompt": batch.texts[i], "completions": [s.text for s in group],
                 "rewards": {label: values[i * k : (i + 1) * k] for label, values in rewards.items()},
                 **({"passed": sum(passed[i])} if passed else {}), **({"episodes": [s.messages for s in group]} if hasattr(group[0], "messages")
                                              else {})} for i, group in enumerate(groups)]
        write_text_atomically(output_dir / "eval_samples.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        return metrics


def _mean(values: list) -> float:
    scorable = [v for v in values if v is not None and not math.isnan(v)]
    return sum(scorable) / len(scorable) if scorable else math.nan
