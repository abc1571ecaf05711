"""The training loop, top-down: generate, score, advantages, train, push weights, log."""

import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from actors.launch import Actors, launch_actors
from actors.weight_sync import SharedMemoryRoute
from rlhf.algorithms import ADVANTAGE_ESTIMATORS
from rlhf.algorithms.advantages import masked_whiten
from rlhf.algorithms.reward_shaping import (
    KLController,
    RunningMoments,
    informative_groups,
    normalize_rewards,
    soft_overlong_punishment,
)
from rlhf.config import Config
from rlhf.data import PromptBatch, PromptStream, load_rows
from rlhf.engines.base import SamplingSettings
from rlhf.experience import Experience
from rlhf.groups import Groups
from rlhf.models import resolve_model_path
from rlhf.tracking import MetricsLog

log = logging.getLogger(__name__)


def run(cfg: Config) -> dict[str, float]:
    """Train for `cfg.steps` steps; return the last step's metrics."""
    from transformers import AutoTokenizer

    output_dir = Path(cfg.output_dir).absolute()
    model_path = resolve_model_path(cfg.model.source, cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    check_context_length(model_path, cfg)
    if cfg.algo.use_critic and cfg.critic.model_path:
        check_same_tokenizer(tokenizer, cfg.critic.model_path)
    prompts = PromptStream(load_rows(cfg.data), tokenizer, cfg.data.system_prompt, cfg.data.max_prompt_tokens, cfg.seed)

    started_ray = connect_ray(cfg)
    actors = launch_actors(cfg, model_path)
    weight_sync = SharedMemoryRoute(actors.policy, actors.rollouts,
                                    os.path.join(cfg.rollout.sync_dir, f"rlhf-weights-{os.getpid()}-{time.time_ns()}"))
    metrics_log = MetricsLog(str(output_dir), cfg.logging.run_name or output_dir.name, cfg.logging.wandb_mode,
                             cfg.logging.wandb_project, cfg.logging.wandb_entity, asdict(cfg), cfg.logging.plot)
    estimate_advantages = ADVANTAGE_ESTIMATORS.get(cfg.algo.advantage_estimator)
    kl_control = KLController(cfg.algo.kl_reward_beta, cfg.algo.kl_target, cfg.algo.kl_horizon)
    reward_moments = RunningMoments()
    sampling = SamplingSettings(cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p)
    metrics: dict[str, float] = {}
    try:
        bar = tqdm(range(cfg.steps), desc="train", disable=not cfg.logging.progress_bar, dynamic_ncols=True)
        for step in bar:
            timer = PhaseTimer()
            groups, sampling_metrics = sample_groups(actors, prompts, cfg, sampling, timer)
            experience = make_experience(actors, groups, tokenizer.pad_token_id, timer)
            if cfg.algo.reward_norm:
                experience.rewards = normalize_rewards(experience.rewards, reward_moments, cfg.algo.reward_clip)
            add_advantages(experience, estimate_advantages, replace(cfg.algo, kl_reward_beta=kl_control.value))

            train_policy = step >= cfg.algo.critic_warmup_steps
            with timer("train"):
                train_metrics = train(actors, experience.without_truncated() if cfg.algo.mask_truncated else experience,
                                      train_policy)
            if train_policy:
                with timer("weight_sync"):
                    weight_sync.push()

            rollout_kl = sequence_kl(experience)
            kl_control.update(rollout_kl, experience.size)
            metrics = {**rollout_metrics(experience, groups), **sampling_metrics, **train_metrics,
                       "rollout_kl": rollout_kl, "kl_coef": kl_control.value, **timer.seconds()}
            report(step, metrics, groups, metrics_log, bar)
        if cfg.save_final:
            ray.get(actors.policy.save_pretrained.remote(str(output_dir / "final"), model_path))
            log.info("final policy saved to %s", output_dir / "final")
    finally:
        weight_sync.close()
        metrics_log.close()
        actors.kill()
        if started_ray:
            ray.shutdown()
    return metrics


def sample_groups(actors: Actors, prompts: PromptStream, cfg: Config, sampling: SamplingSettings,
                  timer: "PhaseTimer") -> tuple[Groups, dict[str, float]]:
    """Draw prompts, generate a group of completions for each, and score them.

    With DAPO's dynamic sampling, groups whose rewards are all equal (nothing to learn from) are dropped and
    more prompts drawn until the batch is full. After `algo.max_sampling_rounds` rounds the batch is topped up
    with dropped groups (advantage 0, logged), so every step trains on the same number of sequences.
    """
    wanted, size = cfg.prompts_per_step, cfg.algo.group_size
    kept, dropped = [], []
    for rounds in range(1, cfg.algo.max_sampling_rounds + 1):
        batch = prompts.next_batch(wanted)
        with timer("generate"):
            samples = generate(actors, batch.token_ids, size, sampling)
        with timer("reward"):
            groups = Groups(batch, samples, ray.get(score(actors, batch, [s.text for g in samples for s in g], size)))
            if cfg.algo.overlong_buffer:
                add_overlong_punishment(groups, cfg)
        if not cfg.algo.dynamic_sampling:
            return groups, {}
        informative = informative_groups(torch.tensor(groups.rewards.total), size).tolist()
        kept.append(groups.take(i for i, keep in enumerate(informative) if keep))
        dropped.append(groups.take(i for i, keep in enumerate(informative) if not keep))
        if sum(map(len, kept)) >= wanted:
            break
    filled = max(0, wanted - sum(map(len, kept)))
    if filled:
        log.warning("dynamic sampling: %d of %d groups still uninformative after %d rounds (algo.max_sampling_rounds); "
                    "training on them with advantage 0", filled, wanted, rounds)
    groups = Groups.concat(kept + dropped).take(range(wanted))
    return groups, {"sampling/rounds": rounds, "sampling/uninformative_in_batch": filled}


def add_overlong_punishment(groups: Groups, cfg: Config) -> None:
    """DAPO's soft overlong punishment, added to the total and logged as its own reward."""
    lengths = torch.tensor([len(s.completion_ids) for s in groups.completions])
    penalty = soft_overlong_punishment(lengths, cfg.rollout.max_new_tokens, cfg.algo.overlong_buffer,
                                       cfg.algo.overlong_penalty).tolist()
    groups.rewards.per_function["overlong"] = penalty
    groups.rewards.total = [t + p for t, p in zip(groups.rewards.total, penalty)]


def make_experience(actors: Actors, groups: Groups, pad_id: int, timer: "PhaseTimer") -> Experience:
    """The batch as tensors, with the reference's logprobs and the critic's values (computed side by side)."""
    experience = Experience.from_samples(groups.batch.token_ids, groups.samples, pad_id)
    experience.rewards = torch.tensor(groups.rewards.total, dtype=torch.float32)
    ref_logp = actors.reference.logprobs.remote(experience) if actors.reference else None
    values = actors.critic.values.remote(experience) if actors.critic else None
    with timer("reference"):
        experience.ref_logp = ray.get(ref_logp) if ref_logp else None
    with timer("values"):
        experience.values = ray.get(values) if values else None
    return experience


def add_advantages(experience: Experience, estimate, algo) -> None:
    """Advantages from the registered estimator; the critic's targets are taken before any whitening."""
    advantages = estimate(experience, algo)
    if experience.values is not None:
        experience.returns = (advantages + experience.values) * experience.mask
    if algo.whiten_advantages:
        advantages = masked_whiten(advantages, experience.mask)
    experience.advantages = advantages


def train(actors: Actors, experience: Experience, train_policy: bool) -> dict[str, float]:
    """Policy and critic train side by side (the policy waits out the critic's warm-up)."""
    learners = ([actors.policy] if train_policy else []) + ([actors.critic] if actors.critic else [])
    results = ray.get([learner.train_step.remote(experience) for learner in learners])
    return {key: value for metrics in results for key, value in metrics.items()}


def report(step: int, metrics: dict, groups: Groups, metrics_log: MetricsLog, bar) -> None:
    if metrics["reward_unscorable"]:
        log.warning("step %d: %d of %d samples unscorable (a reward function returned None/NaN); "
                    "they get advantage 0", step, metrics["reward_unscorable"], len(groups.rewards.total))
    metrics_log.log(step, metrics)
    metrics_log.log_samples(step, [{"prompt": groups.batch.texts[0], "completion": groups.samples[0][0].text,
                                    "reward": groups.rewards.total[0]}])
    bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['rollout_kl']:.4f}",
                    len=f"{metrics['completion_length']:.0f}", s_per_step=f"{metrics['time/step']:.1f}")
    if step % 5 == 4:
        metrics_log.plot()


def check_context_length(model_path: str, cfg: Config) -> None:
    from transformers import AutoConfig

    context = AutoConfig.from_pretrained(model_path).max_position_embeddings
    needed = cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens
    if needed > context:
        raise ValueError(f"data.max_prompt_tokens + rollout.max_new_tokens = {needed} exceeds the model's context "
                         f"of {context} tokens; lower one of them")


def check_same_tokenizer(policy_tokenizer, critic_path: str) -> None:
    from transformers import AutoTokenizer

    if AutoTokenizer.from_pretrained(critic_path).get_vocab() != policy_tokenizer.get_vocab():
        raise ValueError(f"critic.model_path={critic_path!r} has a tokenizer different from the policy's: the critic "
                         "reads the policy's token ids, so both must share one vocabulary")


def connect_ray(cfg: Config) -> bool:
    """Join the configured cluster or the Ray job's one; otherwise start a local instance. True if started."""
    if ray.is_initialized():
        return False
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return False
    # Workers import `rlhf` and `actors` from this checkout, wherever the driver was started from.
    repo = str(Path(__file__).resolve().parents[1])
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, include_dashboard=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}})
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


def sequence_kl(experience: Experience) -> float:
    """Mean over sequences of the summed k1 KL between the rollout policy and the reference (0 without one)."""
    if experience.ref_logp is None:
        return 0.0
    return ((experience.rollout_logp - experience.ref_logp) * experience.mask).sum(-1).mean().item()


def rollout_metrics(experience: Experience, groups: Groups) -> dict[str, float]:
    rewards = groups.rewards
    totals = torch.tensor(rewards.total)
    scorable = ~torch.isnan(totals)
    metrics = {
        "reward": totals[scorable].mean().item() if scorable.any() else math.nan,
        "reward_std": totals[scorable].std().item() if scorable.sum() > 1 else 0.0,
        "reward_unscorable": int((~scorable).sum()),
        "completion_length": experience.mask.sum(-1).mean().item(),
        "truncated_fraction": experience.truncated.float().mean().item(),
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
