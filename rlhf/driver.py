"""The training loop, top-down: generate, score, advantages, train, push weights, log."""

import json
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
from actors.learner_group import LearnerGroup
from actors.rollout import StaleWeightsError
from actors.weight_sync import make_route
from rlhf.algorithms import ADVANTAGE_ESTIMATORS
from rlhf.algorithms.advantages import masked_whiten
from rlhf.algorithms.reward_shaping import KLController, RunningMoments, normalize_rewards
from rlhf.checkpoint import (
    check_no_later_checkpoints,
    find_checkpoint,
    read_driver_state,
    remove_unfinished,
    save_checkpoint,
)
from rlhf.config import Config
from rlhf.data import PromptStream, load_rows
from rlhf.engines.base import SamplingSettings
from rlhf.experience import Experience
from rlhf.groups import Groups
from rlhf.rewards import REWARD_AGGREGATIONS
from rlhf.rewards.aggregation import Aggregation
from rlhf.sampling import Sampler
from rlhf.models import resolve_model_path
from rlhf.tracking import MetricsLog
from rlhf.training import memory

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

    checkpoint_root = Path(cfg.checkpoint.dir or output_dir / "checkpoints").absolute()
    resume_from = find_checkpoint(cfg.resume, checkpoint_root)
    state = read_driver_state(resume_from) if resume_from else None
    if state and cfg.algo.use_critic and not (resume_from / "critic").is_dir():
        raise ValueError(f"{resume_from} holds no critic but algo.use_critic is true: resume with the algorithm "
                         "the checkpoint was written with")
    check_no_later_checkpoints(checkpoint_root, state["step"] if state else -1)
    remove_unfinished(checkpoint_root)

    started_ray = connect_ray(cfg)
    actors = launch_actors(cfg, model_path)
    weight_sync = make_route(cfg.rollout.weight_sync, actors.policy, actors.rollouts,
                             os.path.join(cfg.rollout.sync_dir, f"rlhf-weights-{os.getpid()}-{time.time_ns()}"))
    metrics_log = MetricsLog(str(output_dir), cfg.logging.run_name or output_dir.name, cfg.logging.wandb_mode,
                             cfg.logging.wandb_project, cfg.logging.wandb_entity, asdict(cfg), cfg.logging.plot,
                             resume_step=state["step"] + 1 if state else None,
                             wandb_id=state["wandb_id"] if state else None)
    estimate_advantages = ADVANTAGE_ESTIMATORS.get(cfg.algo.advantage_estimator)
    aggregation = REWARD_AGGREGATIONS.get(cfg.reward.aggregation)(cfg.reward)
    kl_control = KLController(cfg.algo.kl_reward_beta, cfg.algo.kl_target, cfg.algo.kl_horizon)
    reward_moments = RunningMoments()
    sampler = Sampler(actors, cfg, aggregation, weight_sync)
    metrics: dict[str, float] = {}
    try:
        if aggregation.needs_reference_rewards:  # from the initial policy: before any checkpoint is loaded
            sampler.reference_rewards = sampler.estimate_reference_rewards(prompts, output_dir / "reference_rewards.json")
        if cfg.preflight.enabled:
            memory_preflight(actors, cfg, prompts, output_dir)
        first_step = 0
        if state:
            restore(actors, resume_from, state, prompts, kl_control, reward_moments)
            weight_sync.push()
            first_step = state["step"] + 1
            log.info("resumed from %s: continuing at step %d", resume_from, first_step)
        bar = tqdm(range(first_step, cfg.steps), desc="train", disable=not cfg.logging.progress_bar,
                   dynamic_ncols=True, initial=first_step, total=cfg.steps)
        for step in bar:
            timer = PhaseTimer()
            groups, sampling_metrics, experience = rollout_with_retries(
                actors, sampler, prompts, step, tokenizer.pad_token_id, timer, weight_sync, cfg.fault_tolerance)
            if cfg.algo.reward_norm:
                experience.rewards = normalize_rewards(experience.rewards, reward_moments, cfg.algo.reward_clip)
            advantage_metrics = add_advantages(experience, estimate_advantages,
                                               replace(cfg.algo, kl_reward_beta=kl_control.value), aggregation)

            train_policy = step >= cfg.algo.critic_warmup_steps
            with timer("train"):
                weight_sync.before_train()
                train_metrics = train(actors, experience.without_truncated() if cfg.algo.mask_truncated else experience,
                                      train_policy, step, checkpoint_root)
            if train_policy:
                with timer("weight_sync"):
                    weight_sync.push()

            rollout_kl = sequence_kl(experience)
            kl_control.update(rollout_kl, experience.size)
            metrics = {**rollout_metrics(experience, groups), **sampling_metrics, **advantage_metrics, **train_metrics,
                       "rollout_kl": rollout_kl, "kl_coef": kl_control.value, **timer.seconds()}
            report(step, metrics, groups, metrics_log, bar)
            if cfg.checkpoint.every and ((step + 1) % cfg.checkpoint.every == 0 or step == cfg.steps - 1):
                driver_state = {"step": step, "prompts": prompts.state_dict(), "kl_coef": kl_control.value,
                                "reward_moments": reward_moments.state_dict(), "wandb_id": metrics_log.wandb_id}
                path = save_checkpoint(checkpoint_root, step, lambda folder: save_learners(actors, folder),
                                       driver_state, cfg.checkpoint.keep_last)
                log.info("step %d: checkpoint written to %s", step, path)
        if cfg.save_final:
            actors.policy.run("save_pretrained", str(output_dir / "final"), model_path)
            log.info("final policy saved to %s", output_dir / "final")
    finally:
        weight_sync.close()
        metrics_log.close()
        actors.kill()
        if started_ray:
            ray.shutdown()
    return metrics


def save_learners(actors: Actors, folder: Path) -> None:
    learners = {"policy": actors.policy, "critic": actors.critic}
    ray.get([ref for name, group in learners.items() if group for ref in group.call("save_checkpoint", str(folder / name))])


def restore(actors: Actors, folder: Path, state: dict, prompts: PromptStream, kl_control: KLController,
            reward_moments: RunningMoments) -> None:
    learners = {"policy": actors.policy, "critic": actors.critic}
    ray.get([ref for name, group in learners.items() if group for ref in group.call("load_checkpoint", str(folder / name))])
    prompts.load_state_dict(state["prompts"])
    kl_control.value = state["kl_coef"]
    reward_moments.load_state_dict(state["reward_moments"])


def memory_preflight(actors: Actors, cfg: Config, prompts: PromptStream, output_dir: Path) -> None:
    """Each role runs its heaviest work once at the longest lengths (the longest prompt of the data, the full
    token budget); if the peaks of the roles sharing a node exceed `preflight.memory_fraction` of it, stop now
    with every role's number rather than when the OOM killer strikes mid-run. Writes preflight.json."""
    started = time.perf_counter()
    longest = max(prompts.token_ids, key=len)
    sampling = SamplingSettings(cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.rollout.top_p, seed=0,
                                ignore_eos=True)
    per_engine = math.ceil(cfg.prompts_per_step / len(actors.rollouts))
    pending = [engine.preflight.remote([longest] * per_engine, cfg.algo.group_size, sampling)
               for engine in actors.rollouts]
    pending += [actor.preflight.remote() for actor in [actors.reward, *actors.reward_models.values()] if actor]
    lengths = (len(longest), cfg.rollout.max_new_tokens)
    if actors.reference:
        pending.append(actors.reference.preflight.remote(*lengths))
    for group in filter(None, (actors.policy, actors.critic)):
        pending += group.call("preflight", *lengths)
    reports = [*ray.get(pending), memory.report("driver", memory.peak_rss_gib())]
    write_json_atomically(output_dir / "preflight.json", reports)
    log.info("memory pre-flight (%.0f s): %s", time.perf_counter() - started,
             ", ".join(f"{r['role']} {r['peak_gib']:.2f} GiB" for r in reports))
    problems = memory.check_fit(reports, cfg.preflight.memory_fraction, cfg.preflight.node_memory_gib)
    if problems:
        raise MemoryError("memory pre-flight: this run would not fit in memory.\n" + "\n".join(problems) +
                          "\nLower train.micro_batch_size, rollout.max_new_tokens, data.max_prompt_tokens or "
                          "rollout.kv_cache_gib, use train.zero_stage=3 over more ranks, or placement=split over more "
                          "nodes (preflight.json has every role's peak)")


def write_json_atomically(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


# What a dead actor looks like to the driver (Ray restarts it unless its restarts are used up).
ACTOR_DIED = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
# ... and what a restarted engine says when asked to generate: it is back at the initial weights.
ACTOR_RESTARTED = (*ACTOR_DIED, StaleWeightsError)


def rollout_with_retries(actors: Actors, sampler: Sampler, prompts: PromptStream, step: int, pad_id: int,
                         timer: "PhaseTimer", weight_sync, fault_tolerance):
    """Generate, score and build the experience. If a rollout, reward or reference actor dies meanwhile, wait
    for Ray to restart it, push the current weights (a restarted engine starts from the initial ones), rewind
    the prompt stream and redo the step, at most `fault_tolerance.max_step_retries` times."""
    cursor = prompts.state_dict()
    for attempt in range(fault_tolerance.max_step_retries + 1):
        try:
            groups, sampling_metrics = sampler.sample_groups(prompts, step, timer)
            experience = make_experience(actors, groups, pad_id, timer)
            return groups, {**sampling_metrics, "step_retries": attempt}, experience
        except ACTOR_RESTARTED as err:
            if attempt == fault_tolerance.max_step_retries:
                raise RuntimeError(f"step {step}: an actor died {attempt + 1} times in a row "
                                   f"(fault_tolerance.max_step_retries={fault_tolerance.max_step_retries}): {err}") from err
            log.warning("step %d: an actor died (%s); waiting for its restart, then redoing the step (retry %d of %d)",
                        step, type(err).__name__, attempt + 1, fault_tolerance.max_step_retries)
            wait_for_restarts(actors)
            weight_sync.push()
            prompts.load_state_dict(cursor)


def wait_for_restarts(actors: Actors, timeout_s: float = 300.0) -> None:
    deadline = time.time() + timeout_s
    for actor in filter(None, actors.stateless()):
        while True:
            try:
                ray.get(actor.ready.remote(), timeout=max(1.0, deadline - time.time()))
                break
            except ACTOR_DIED:
                if time.time() > deadline:
                    raise
                time.sleep(1.0)


def make_experience(actors: Actors, groups: Groups, pad_id: int, timer: "PhaseTimer") -> Experience:
    """The batch as tensors, with the reference's logprobs and the critic's values (computed side by side)."""
    experience = Experience.from_samples(groups.batch.token_ids, groups.samples, pad_id)
    experience.rewards = torch.tensor(groups.rewards.total, dtype=torch.float32)
    experience.objective_rewards = groups.rewards.objectives()
    ref_logp = actors.reference.logprobs.remote(experience) if actors.reference else None
    values = actors.critic.call("values", experience)[0] if actors.critic else None
    with timer("reference"):
        experience.ref_logp = ray.get(ref_logp) if ref_logp else None
    with timer("values"):
        experience.values = ray.get(values) if values else None
    return experience


def add_advantages(experience: Experience, estimate, algo, aggregation: Aggregation) -> dict[str, float]:
    """Advantages from the registered estimator; the critic's targets are taken before any whitening.

    An aggregation that combines advantages (PAMA) gets the estimator's advantages for each objective on its
    own, each against its own value head when there is a critic."""
    metrics = {}
    if aggregation.per_objective_advantages:
        objectives = experience.objective_rewards
        values = experience.values
        per_objective = torch.stack([
            estimate(replace(experience, rewards=objectives[:, k],
                             values=values[..., k] if values is not None and values.dim() == 3 else values), algo)
            for k in range(objectives.shape[1])
        ], -1)
        if values is not None:
            experience.returns = (per_objective.reshape(values.shape) + values) * _mask_like(experience.mask, values)
        ratio = (torch.exp(experience.rollout_logp - experience.ref_logp) if algo.ratio_against == "reference"
                 else torch.ones_like(experience.mask))
        advantages, metrics = aggregation.combine_advantages(per_objective, experience.mask, ratio, algo.clip_eps_high)
    else:
        advantages = estimate(experience, algo)
        if experience.values is not None:
            experience.returns = (advantages + experience.values) * experience.mask
    if algo.whiten_advantages:
        advantages = masked_whiten(advantages, experience.mask)
    experience.advantages = advantages
    return metrics


def _mask_like(mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return mask[..., None] if values.dim() == 3 else mask


def train(actors: Actors, experience: Experience, train_policy: bool, step: int, checkpoints: Path) -> dict[str, float]:
    """Policy and critic train side by side (the policy waits out the critic's warm-up); every rank gets the
    batch and trains on its share. A learner rank that dies ends the run: its optimizer state is gone."""
    learners = ([actors.policy] if train_policy else []) + ([actors.critic] if actors.critic else [])
    batch = ray.put(experience)
    pending = [learner.call("train_step", batch) for learner in learners]
    try:
        results = [ray.get(refs) for refs in pending]
    except ACTOR_DIED as err:
        raise RuntimeError(f"step {step}: a learner rank died ({type(err).__name__}); the run stops. Checkpoints in "
                           f"{checkpoints} are intact: rerun the same command with resume=auto") from err
    return {key: value for per_rank in results for key, value in LearnerGroup.reduce(per_rank).items()}


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
    for name, values in {**rewards.per_objective, **rewards.shaping}.items():
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
