"""The training loop, top-down: generate, score, advantages, train, push weights, log."""

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from actors.launch import Actors, launch_actors
from actors.weight_sync import SharedMemoryRoute
from rlhf.algorithms import ADVANTAGE_ESTIMATORS
from rlhf.config import Config
from rlhf.data import PromptBatch, PromptStream, load_rows
from rlhf.engines.base import SamplingSettings
from rlhf.experience import Experience
from rlhf.models import resolve_model_path
from rlhf.rewards import RewardResult
from rlhf.tracking import MetricsLog

log = logging.getLogger(__name__)


def run(cfg: Config) -> dict[str, float]:
    """Train for `cfg.steps` steps; return the last step's metrics."""
    from transformers import AutoTokenizer

    output_dir = Path(cfg.output_dir).absolute()
    model_path = resolve_model_path(cfg.model.source, cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    check_context_length(model_path, cfg)
    prompts = PromptStream(load_rows(cfg.data), tokenizer, cfg.data.system_prompt, cfg.data.max_prompt_tokens, cfg.seed)

    started_ray = connect_ray(cfg)
    actors = launch_actors(cfg, model_path)
    weight_sync = SharedMemoryRoute(actors.policy, actors.rollouts,
                                    os.path.join(cfg.rollout.sync_dir, f"rlhf-weights-{os.getpid()}-{time.time_ns()}"))
    metrics_log = MetricsLog(str(output_dir), cfg.logging.run_name or output_dir.name, cfg.logging.wandb_mode,
                             cfg.logging.wandb_project, cfg.logging.wandb_entity, asdict(cfg), cfg.logging.plot)
    estimate_advantages = ADVANTAGE_ESTIMATORS.get(cfg.algo.advantage_estimator)
    sampling = SamplingSettings(cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p)
    metrics: dict[str, float] = {}
    try:
        bar = tqdm(range(cfg.steps), desc="train", disable=not cfg.logging.progress_bar, dynamic_ncols=True)
        for step in bar:
            timer = PhaseTimer()
            batch = prompts.next_batch(cfg.prompts_per_step)
            with timer("generate"):
                samples = generate(actors, batch.token_ids, cfg.algo.group_size, sampling)
                experience = Experience.from_samples(batch.token_ids, samples, tokenizer.pad_token_id)
            with timer("score"):  # reward and reference run side by side
                completions = [s.text for group in samples for s in group]
                rewards = score(actors, batch, completions, cfg.algo.group_size)
                if actors.reference is not None:
                    experience.ref_logp = ray.get(actors.reference.logprobs.remote(experience))
                rewards = ray.get(rewards)
            experience.rewards = torch.tensor(rewards.total, dtype=torch.float32)
            experience.advantages = estimate_advantages(experience, cfg.algo)
            with timer("train"):
                train_metrics = ray.get(actors.policy.train_step.remote(experience))
            with timer("weight_sync"):
                weight_sync.push()

            metrics = {**rollout_metrics(experience, rewards, samples), **train_metrics, **timer.seconds()}
            metrics_log.log(step, metrics)
            metrics_log.log_samples(step, [{"prompt": batch.texts[0], "completion": completions[0],
                                            "reward": rewards.total[0]}])
            bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['kl']:.4f}",
                            len=f"{metrics['completion_length']:.0f}", s_per_step=f"{metrics['time/step']:.1f}")
            if step % 5 == 4:
                metrics_log.plot()
        if cfg.save_final:
            ray.get(actors.policy.save_pretrained.remote(str(output_dir / "final"), model_path))
            log.info("final policy saved to %s", output_dir / "final")
    finally:
        weight_sync.close()
        metrics_log.close()
        if started_ray:
            ray.shutdown()
    return metrics


def check_context_length(model_path: str, cfg: Config) -> None:
    from transformers import AutoConfig

    context = AutoConfig.from_pretrained(model_path).max_position_embeddings
    needed = cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens
    if needed > context:
        raise ValueError(f"data.max_prompt_tokens + rollout.max_new_tokens = {needed} exceeds the model's context "
                         f"of {context} tokens; lower one of them")


def connect_ray(cfg: Config) -> bool:
    """Join the configured cluster or the Ray job's one; otherwise start a local instance. True if started."""
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return False
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False)
    return True


def generate(actors: Actors, prompts: list[list[int]], n: int, sampling: SamplingSettings):
    """Share the prompts among the rollout engines; results come back in prompt order."""
    engines = actors.rollouts
    chunk = math.ceil(len(prompts) / len(engines))
    parts = [prompts[i : i + chunk] for i in range(0, len(prompts), chunk)]
    results = ray.get([engine.generate.remote(part, n, sampling) for engine, part in zip(engines, parts)])
    return [group for part in results for group in part]


def score(actors: Actors, batch: PromptBatch, completions: list[str], group_size: int):
    """Start scoring (returns a Ray reference): every row column is repeated for each sample of its group."""
    repeat = lambda values: [v for v in values for _ in range(group_size)]  # noqa: E731
    columns = {key: repeat([row.get(key) for row in batch.rows]) for key in batch.rows[0] if key != "prompt"}
    prompts = repeat([row["prompt"] for row in batch.rows])
    return actors.reward.score.remote(prompts, completions, columns)


def rollout_metrics(experience: Experience, rewards: RewardResult, samples) -> dict[str, float]:
    totals = torch.tensor(rewards.total)
    scorable = ~torch.isnan(totals)
    metrics = {
        "reward": totals[scorable].mean().item() if scorable.any() else math.nan,
        "reward_std": totals[scorable].std().item() if scorable.sum() > 1 else 0.0,
        "reward_unscorable": int((~scorable).sum()),
        "completion_length": experience.mask.sum(-1).mean().item(),
        "truncated_fraction": sum(s.truncated for g in samples for s in g) / experience.size,
    }
    for name, values in rewards.per_function.items():
        metrics[f"reward/{name}"] = torch.tensor(values).nanmean().item()
    return metrics


class PhaseTimer:
    """Wall-clock seconds per phase of a step, plus the whole step."""

    def __init__(self):
        self.start, self.phases = time.perf_counter(), {}

    @contextmanager
    def __call__(self, name: str):
        began = time.perf_counter()
        yield
        self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - began

    def seconds(self) -> dict[str, float]:
        out = {f"time/{k}": v for k, v in self.phases.items()}
        out["time/step"] = time.perf_counter() - self.start
        return out
