"""The training loop, top-down: generate, score, advantages, train, push weights, log."""

import json
import logging
import math
import os
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from actors.launch import Actors, engine_sleeps, launch_actors
from actors.learner_group import LearnerGroup, RankDied
from actors.weight_sync import make_route
from rlhf.algorithms import ADVANTAGE_ESTIMATORS, AdvantageInputs
from rlhf.algorithms.reward_shaping import KLController, RunningMoments
from rlhf.algorithms.transforms import TransformContext, transforms_by_stage
from rlhf.checkpoint import (
    check_no_later_checkpoints,
    checkpoint_path,
    find_checkpoint,
    prune_checkpoints,
    read_driver_state,
    remove_unfinished,
    save_checkpoint,
    save_learners,
)
from rlhf.config import Config, settings_that_cannot_act
from rlhf.console import configure_driver_logging, eval_line, final_summary, startup_summary
from rlhf.data import PromptStream, prompt_sets
from rlhf.engines.base import SamplingSettings
from rlhf.evaluation import Evaluator
from rlhf.evaluation import due as evaluation_due
from rlhf.passing import pass_rule
from rlhf.experience import Experience
from rlhf.groups import Groups
from rlhf.rewards import REWARD_AGGREGATIONS
from rlhf.rewards.aggregation import Aggregation
from rlhf.rollout.recovery import ACTOR_DIED, ACTOR_RESTARTED
from rlhf.rollout.sampler import Sampler
from rlhf.rollout.schedules import make_schedule
from rlhf.rollout.scoring import reward_columns
from rlhf.rollout.sources import rollout_source
from rlhf.rollout.timing import PhaseTimer
from rlhf.sft.warm_start import PHASE as WARM_START
from rlhf.sft.warm_start import WarmStart
from rlhf.stopping import StopRequest
from rlhf.models import resolve_model_path
from rlhf.models.folders import write_text_atomically
from rlhf.models.resolve import cache_root
from rlhf.precision import resolve_precision
from rlhf.tracking import MetricsLog
from rlhf.rewards.scoring import check_reward_sources
from rlhf.training import memory, sync_folders

log = logging.getLogger(__name__)


class UnscorableRewardsError(RuntimeError):
    """Every sample of several steps in a row had no reward."""


class RolloutMismatchError(RuntimeError):
    """The engine's logprobs are further from the learner's than `algo.correction.max_mismatch_kl` allows."""


def check_mismatch(step: int, metrics: dict, max_kl: float | None) -> None:
    if max_kl is not None and metrics.get("mismatch_kl", 0.0) > max_kl:
        raise RolloutMismatchError(
            f"step {step}: the rollout engine's logprobs are KL {metrics['mismatch_kl']:.4g} (k3, per token) from the "
            f"learner's, over algo.correction.max_mismatch_kl={max_kl:g} (mean |difference| "
            f"{metrics['logprob_gap']:.4g}): the engine samples another policy than the one trained (precision, "
            "stale weights); the run stops")


def run(cfg: Config, stop: StopRequest | None = None) -> dict[str, float]:
    """Train for `cfg.steps` steps, or until `stop` is requested (SIGINT / SIGTERM: rlhf/stopping.py); return the last
    step's metrics."""
    configure_driver_logging(cfg.logging.console, cfg.output_dir)
    if cfg.algo.name == "sft":  # supervised fine-tuning, a loop of its own on the same actors (rlhf/sft/trainer.py)
        from rlhf.sft.trainer import run_sft

        return run_sft(cfg, stop or StopRequest())
    trainer = Trainer(cfg, stop or StopRequest())
    try:
        return trainer.train()
    finally:
        trainer.close()


class Trainer:
    """One run: its actors, prompt stream, weight-sync route and loop state (KL controller, reward statistics)."""

    def __init__(self, cfg: Config, stop: StopRequest):
        from transformers import AutoTokenizer

        self.cfg, self.stop = cfg, stop
        self.output_dir = Path(cfg.output_dir).absolute()
        self.model_path = resolve_model_path(cfg.model.source, cfg.model.path)
        # the CPU roles' precision where the config leaves it open: measured on this CPU (rlhf/precision.py)
        cfg, self.precision = resolve_precision(cfg, self.model_path, cache_root() / "precision.json")
        self.cfg = cfg
        tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.pad_id = tokenizer.pad_token_id
        check_model_fits(self.model_path, cfg)
        if cfg.algo.critic.enabled and cfg.critic.model_path:
            check_same_tokenizer(tokenizer, cfg.critic.model_path)
        # single turns, or multi-turn episodes: built now, so an environment, tool or template that cannot serve is
        # named before Ray starts; an episode's prompt holds the tools' descriptions beside the row's
        self.source = rollout_source(None, cfg, tokenizer)
        self.prompts, self.eval_prompts = prompt_sets(cfg, tokenizer, self.source.prompt_overhead())
        # sft.steps > 0: supervised steps on demonstrations before the RL steps (rlhf/sft/warm_start.py)
        self.warm_start = WarmStart(cfg, tokenizer) if cfg.sft.steps else None

        self.checkpoints, self.resume_from, self.state = open_checkpoints(cfg, self.output_dir)
        if self.state and cfg.algo.critic.enabled and not (self.resume_from / "critic").is_dir():
            raise ValueError(f"{self.resume_from} holds no critic but algo.critic.enabled is true: resume with the "
                             "algorithm the checkpoint was written with")
        check_resumable(self.resume_from, self.state, self.warm_start is not None)

        # before any actor: an actor that cannot be built would be retried
        check_reward_sources(cfg.reward, reward_columns(self.prompts.columns, cfg.env.enabled), bool(cfg.env.factory))
        if self.eval_prompts is not None:  # scored with the eval set's columns
            eval_columns = reward_columns(self.eval_prompts.rows[0], cfg.env.enabled)
            if cfg.eval.rewards:
                check_reward_sources(replace(cfg.reward, functions=cfg.eval.rewards, models=[]), eval_columns,
                                     bool(cfg.env.factory), "eval.rewards")
            elif cfg.eval.data:
                check_reward_sources(replace(cfg.reward, models=[]), eval_columns, bool(cfg.env.factory),
                                     "reward.functions (scoring eval.data)")
            pass_rule(cfg)  # refuses a checkpoint.keep_best on a pass@k that would never be logged
        sync_folders.remove_orphans(cfg.rollout.sync_dir)
        self.started_ray = connect_ray(cfg)
        self.stop.install()  # after ray.init, whose own SIGTERM handler aborts the process
        try:
            self.actors = launch_actors(cfg, self.model_path)
            self.weight_sync = weight_route(cfg, self.actors, overlap=cfg.rollout.mode != "sync")
            check_overlap_route(cfg.rollout.mode, self.weight_sync.name)
            self.metrics_log = open_metrics_log(MetricsLog, cfg, self.output_dir, self.state)
        except BaseException:
            if self.started_ray:  # the actors go with the Ray instance this run started
                ray.shutdown()
            raise
        log.info("%s", startup_summary(cfg, self.actors.placement.demands, self.weight_sync.name, self.precision))
        for warning in settings_that_cannot_act(cfg):
            log.warning(warning)
        self.estimate_advantages = ADVANTAGE_ESTIMATORS.get(cfg.algo.estimator.name)
        self.aggregation = REWARD_AGGREGATIONS.get(cfg.reward.aggregation)(cfg.reward)
        self.kl_control = KLController(cfg.algo.kl.reward_beta, cfg.algo.kl.target, cfg.algo.kl.horizon)
        self.reward_moments = RunningMoments()
        self.transforms = transforms_by_stage(cfg.algo.transforms)
        self.source.bind(self.actors)
        self.sampler = Sampler(self.actors, cfg, self.aggregation, self.source)
        self.evaluator = Evaluator(self.actors, cfg, self.eval_prompts, self.source) if self.eval_prompts else None
        # a background rollout's retry starts restarted engines; where they share a GPU, not while the learners train
        self.gpu_guard = threading.Lock() if self.actors.engines_start_alone else nullcontext()
        # when batches are generated (rollout.mode): synchronous, one step off, or asynchronous
        self.schedule = make_schedule(self.actors, cfg, self.sampler, self.prompts, self.pad_id, self.weight_sync,
                                      self.gpu_guard)

    def train(self) -> dict[str, float]:
        started = time.perf_counter()
        try:
            return self._train()
        finally:
            log.info("%s", final_summary(self.metrics_log.history, time.perf_counter() - started, str(self.output_dir)))

    def _train(self) -> dict[str, float]:
        cfg = self.cfg
        first_step = self.prepare()
        bar = tqdm(range(first_step, cfg.steps), desc="train", disable=not cfg.logging.progress_bar,
                   dynamic_ncols=True, initial=first_step, total=cfg.steps)
        metrics, step, unscorable_steps = {}, first_step, 0
        try:
            for step in bar:
                if self.stop.requested:  # stopped during the start-up or the warm start: no step, no final weights
                    self.stop.after_step = step - 1 if self.stop.after_step is None else self.stop.after_step
                    return metrics
                timer = PhaseTimer()
                groups, sampling_metrics, experience = self.schedule.next(step, timer)
                logged, extra_columns = reward_logs(self.actors.reward)  # TRL's log_metric / log_extra
                # the engines are idle now (a background rollout is collected; an async stream pauses for it):
                # evaluate the weights this step trains from, those of `step` updates
                eval_metrics = self.evaluate(step, timer)
                cursor = self.schedule.state_dict()  # where a resume continues
                self.schedule.prefetch(step)
                metrics = {**self.learn(step, experience, groups.topped_up, timer), **rollout_metrics(experience, groups),
                           **sampling_metrics, **eval_metrics, **logged, **timer.seconds()}
                report(step, metrics, groups, self.metrics_log, bar, cfg.logging.samples_per_step, extra_columns)
                # a step whose every sample is unscorable trains on nothing: a few in a row mean the rewards are broken
                unscorable_steps = unscorable_steps + 1 if metrics["reward_unscorable"] == len(groups.rewards.total) else 0
                if unscorable_steps == cfg.reward.max_unscorable_steps:
                    raise UnscorableRewardsError(
                        f"step {step}: {unscorable_steps} steps in a row in which the rewards "
                        f"{cfg.reward.objective_labels()} left every sample unscorable (None or NaN): nothing was "
                        "learned; the run stops (reward.max_unscorable_steps)")
                if checkpoint_due(step, cfg) or (self.stop.requested and cfg.checkpoint.on_stop):
                    self.save(step, cursor)
                if self.stop.requested:  # close() waits for a background rollout already running
                    self.stop.after_step = step
                    log.warning("step %d: stopped by signal; resume with resume=auto", step)
                    return metrics
        except (*ACTOR_DIED, RankDied) as err:
            raise run_stopped(step, f"a learner rank died (or a rank of a sharded reference, or another actor could "
                              f"not be brought back: {type(err).__name__})", self.checkpoints, self.output_dir) from err
        final_eval = self.evaluate(cfg.steps, PhaseTimer())
        if final_eval:  # the weights after the last update (always evaluated), logged as the step that would come next
            self.metrics_log.log(cfg.steps, final_eval)
            prune_checkpoints(self.checkpoints, cfg.checkpoint.keep_last, self.best_checkpoint())
            metrics = {**metrics, **final_eval}
        if cfg.save_final:
            save_final(self.actors, self.output_dir, self.model_path)
        return metrics

    def prepare(self) -> int:
        """Everything before the first step; returns that step."""
        if self.cfg.preflight.enabled:
            memory_preflight(self.actors, self.cfg, self.prompts, self.output_dir, self.warm_start, self.model_path)
        fresh = not self.state or self.state.get("phase") == WARM_START  # or stopped during the warm start
        if fresh and self.warm_start and not self.warm_start.run(self, self.state):
            return 0  # stopped during the warm start: the loop takes no step
        if self.aggregation.needs_reference_rewards:
            # LSC's r_ref from the initial policy: the warm-started one when there is a warm start (the engines hold it
            # now), before any RL update; a resume of an RL checkpoint reads them back from their file
            self.sampler.reference_rewards = self.sampler.estimate_reference_rewards(
                self.prompts, self.output_dir / "reference_rewards.json")
        if fresh:
            return 0
        restore(self.actors, self.resume_from, self.state, self.schedule, self.kl_control, self.reward_moments)
        self.weight_sync.push()
        if self.warm_start:
            self.warm_start.resume(self)
        log.info("resumed from %s: continuing at step %d", self.resume_from, self.state["step"] + 1)
        return self.state["step"] + 1

    def evaluate(self, step: int, timer: "PhaseTimer") -> dict[str, float]:
        if self.evaluator is None or not evaluation_due(step, self.cfg):
            return {}
        with timer("eval"):
            try:
                metrics = self.evaluator.evaluate(step, self.weight_sync.version, self.output_dir)
            except ACTOR_RESTARTED as err:  # the next rollout waits for the restart and pushes the weights again
                log.warning("step %d: evaluation skipped: an engine or reward actor died or is restarting (%s)",
                            step, type(err).__name__)
                return {}
        log.info("%s", eval_line(step, metrics, self.evaluator.passing))
        return metrics

    def best_checkpoint(self) -> str | None:
        """The checkpoint whose weights scored highest on `checkpoint.keep_best`: the eval at step k saw the
        weights saved after step k - 1."""
        metric = self.cfg.checkpoint.keep_best
        scores = {r["step"] - 1: r[metric] for r in self.metrics_log.history if metric and metric in r and r["step"] > 0
                  and not math.isnan(r[metric])}
        saved = [s for s in scores if checkpoint_path(self.checkpoints, s).is_dir()]
        return checkpoint_path(self.checkpoints, max(saved, key=scores.get)).name if saved else None

    def learn(self, step: int, experience: Experience, topped_up: int, timer: "PhaseTimer") -> dict[str, float]:
        """Advantages, the learners' update, the weight push, the KL controller. `topped_up`: trailing groups that
        fill the batch but take no part in the loss."""
        cfg = self.cfg
        context = TransformContext(cfg.algo, self.reward_moments)
        for transform in self.transforms["rewards"]:
            experience.rewards = transform(experience.rewards, context)
        metrics = add_advantages(experience, self.estimate_advantages, cfg.algo, self.kl_control.value,
                                 self.aggregation, self.transforms["advantages"], context)
        train_policy = step >= cfg.algo.critic.warmup_steps
        with timer("train"):
            if train_policy:  # a push follows: sleeping engines may give up their weights meanwhile
                self.weight_sync.before_train()
            batch = training_batch(experience, topped_up * cfg.algo.group_size, self.transforms["training"], context)
            with self.gpu_guard:
                metrics.update(train(self.actors, batch, train_policy))
            check_mismatch(step, metrics, cfg.algo.correction.max_mismatch_kl)
        if train_policy:
            self.schedule.after_update(timer)  # pushes the new weights (async: every rollout.push_every updates)
        rollout_kl = sequence_kl(experience)
        self.kl_control.update(rollout_kl, experience.size)
        return {**metrics, "rollout_kl": rollout_kl, "kl_coef": self.kl_control.value}

    def save(self, step: int, cursor: dict) -> None:
        driver_state = {"step": step, **cursor, "kl_coef": self.kl_control.value,
                        "reward_moments": self.reward_moments.state_dict(), "wandb_id": self.metrics_log.wandb_id}
        path = save_checkpoint(self.checkpoints, step, lambda folder: save_learners(self.actors, folder),
                               driver_state, self.cfg.checkpoint.keep_last, self.best_checkpoint())
        log.info("step %d: checkpoint written to %s", step, path)

    def close(self) -> None:
        self.schedule.close()
        self.weight_sync.close()
        self.source.close()
        self.metrics_log.close()
        self.actors.kill()
        if self.started_ray:
            ray.shutdown()


def run_stopped(step: int, why: str, checkpoints: Path, output_dir: Path) -> RuntimeError:
    """The error that stops a run whose actor died past recovery: what happened, and how to go on."""
    return RuntimeError(f"step {step}: {why}; the run stops. Checkpoints in {checkpoints} are intact: rerun the same "
                        f"command with resume=auto. Each actor's output is in {output_dir / 'logs'}")


def open_checkpoints(cfg: Config, output_dir: Path) -> tuple[Path, Path | None, dict | None]:
    """The run's checkpoint folder, the checkpoint `resume` names (or None) and its driver state. A folder holding
    checkpoints past where the run starts (a fresh run: its warm start's first step, a negative one, or step 0) is
    refused; what an interrupted save left is swept."""
    checkpoints = Path(cfg.checkpoint.dir or output_dir / "checkpoints").absolute()
    resume_from = find_checkpoint(cfg.resume, checkpoints)
    state = read_driver_state(resume_from) if resume_from else None
    check_no_later_checkpoints(checkpoints, state["step"] if state else -cfg.sft.steps - 1)
    remove_unfinished(checkpoints)
    return checkpoints, resume_from, state


def weight_route(cfg: Config, actors: Actors, overlap: bool):
    """The route that pushes the policy's weights to the engines (`rollout.weight_sync` and its settings)."""
    return make_route(cfg.rollout.weight_sync, actors.policy, actors.rollouts, cfg.rollout.sync_dir, overlap=overlap,
                      timeout_s=cfg.rollout.sync_timeout_s, drain_timeout_s=cfg.rollout.drain_timeout_s,
                      bucket_mb=cfg.rollout.sync_bucket_mb, sleep=engine_sleeps(cfg),
                      tensor_parallel_size=cfg.rollout.tensor_parallel_size)


def open_metrics_log(kind: type[MetricsLog], cfg: Config, output_dir: Path, state: dict | None) -> MetricsLog:
    """metrics.jsonl and wandb, continuing a resumed run's (its lines after the checkpoint set aside, its wandb run)."""
    return kind(str(output_dir), cfg.logging.run_name or output_dir.name, cfg.logging.wandb_mode,
                cfg.logging.wandb_project, cfg.logging.wandb_entity, asdict(cfg), cfg.logging.plot,
                resume_step=state["step"] + 1 if state else None, wandb_id=state["wandb_id"] if state else None)


def save_final(actors: Actors, output_dir: Path, model_path: str) -> None:
    """The policy as a HF folder in <output_dir>/final."""
    actors.policy.run("save_pretrained", str(output_dir / "final"), model_path)
    log.info("final policy saved to %s", output_dir / "final")


def checkpoint_due(step: int, cfg: Config) -> bool:
    """Whether a checkpoint is written after `step`: every `checkpoint.every` steps and after the last, and with
    `checkpoint.keep_best` before every evaluation too (the eval at step k ranks the weights saved after step k - 1:
    without that checkpoint the best could not be kept)."""
    every = cfg.checkpoint.every
    regular = every > 0 and ((step + 1) % every == 0 or step == cfg.steps - 1)
    return regular or (cfg.checkpoint.keep_best is not None and evaluation_due(step + 1, cfg))


def restore(actors: Actors, folder: Path, state: dict, schedule, kl_control: KLController,
            reward_moments: RunningMoments) -> None:
    learners = {"policy": actors.policy, "critic": actors.critic}
    ray.get([ref for name, group in learners.items() if group for ref in group.call("load_checkpoint", str(folder / name))])
    schedule.load_state_dict(state)  # the data cursor (and an async run's groups to generate again)
    kl_control.value = state["kl_coef"]
    reward_moments.load_state_dict(state["reward_moments"])


def memory_preflight(actors: Actors, cfg: Config, prompts: PromptStream, output_dir: Path,
                     warm_start: WarmStart | None = None, model_path: str | None = None) -> None:
    """Each role runs its heaviest work once at the longest lengths (the longest prompt of the data, the full
    token budget); if the peaks of the roles sharing a node exceed `preflight.memory_fraction` of it, stop now
    with every role's number rather than when the OOM killer strikes mid-run. Writes preflight.json.
    With a warm start the policy ranks first run its heaviest SFT micro-batch, then the RL work holding the frozen
    copy of the warm-started policy that is the reference (sft.reference=policy; the model folder's shapes)."""
    started = time.perf_counter()
    longest = prompts.longest()
    longest = longest + longest[-1:] * prompts.reserved_tokens  # an episode's prompt: the tools' descriptions too
    pending = rollout_preflight(actors, cfg, longest, cfg.prompts_per_step, cfg.algo.group_size,
                                cfg.completion_budget())
    lengths = (len(longest), cfg.completion_budget())
    if actors.reference:
        pending += actors.reference.preflight(*lengths)
    if warm_start is not None:
        frozen = ((model_path, cfg.train.bf16, cfg.train.attn_implementation) if cfg.sft.reference == "policy"
                  else None)
        pending += actors.policy.call("warm_start_preflight", *lengths, warm_start.preflight_case(), frozen)
    for group in filter(None, (actors.policy if warm_start is None else None, actors.critic)):
        pending += group.call("preflight", *lengths)
    check_preflight(pending, cfg, output_dir, started)


def rollout_preflight(actors: Actors, cfg: Config, prompt: list[int], prompts: int, samples: int,
                      max_tokens: int) -> list:
    """The engines' pre-flight (`prompts` copies of `prompt`, shared among them, `samples` each, `max_tokens` each,
    EOS ignored) and the scorers' (reward functions, reward models)."""
    sampling = SamplingSettings(max_tokens, cfg.rollout.temperature, cfg.rollout.top_p, seed=0, ignore_eos=True)
    pending = []
    if actors.rollouts:
        per_engine = math.ceil(prompts / len(actors.rollouts))
        pending += [engine.preflight.remote([prompt] * per_engine, samples, sampling) for engine in actors.rollouts]
    scorers = [actors.reward, actors.eval_reward, *actors.reward_models.values()]
    return pending + [actor.preflight.remote() for actor in scorers if actor]


def check_preflight(pending: list, cfg: Config, output_dir: Path, started: float) -> None:
    """The roles' pre-flight reports (and the driver's), written to preflight.json and checked against the nodes' and
    GPUs' memory: a run that would not fit stops here naming every role's peak."""
    reports = [*ray.get(pending), memory.report("driver", memory.peak_rss_gib())]
    write_text_atomically(output_dir / "preflight.json", json.dumps(reports, indent=1))
    log.info("memory pre-flight (%.0f s): %s", time.perf_counter() - started, ", ".join(
        f"{r['role']} {r['peak_gib']:.2f} GiB" + (f" (GPU {r['gpu_need_gib']:.2f} GiB)" if "gpu_need_gib" in r else "")
        for r in reports))
    problems = memory.check_fit(reports, cfg.preflight.memory_fraction, cfg.preflight.node_memory_gib)
    if problems:
        raise MemoryError("memory pre-flight: this run would not fit in memory.\n" + "\n".join(problems) +
                          "\nLower train.micro_batch_size, rollout.max_new_tokens, data.max_prompt_tokens or "
                          "rollout.kv_cache_gib; on a GPU, rollout.gpu_memory_utilization or the roles' GPU shares, or "
                          "train.offload_optimizer=true (with train.zero_stage >= 1); use train.zero_stage=3 over more "
                          "ranks, or placement=split over more nodes (preflight.json has every role's peak)")


def add_advantages(experience: Experience, estimate, algo, kl_coef: float, aggregation: Aggregation,
                   transforms=(), context: TransformContext | None = None) -> dict[str, float]:
    """Advantages from the registered estimator, then the `advantages`-stage transforms (whitening); the
    critic's targets are taken before them. `kl_coef`: the KL controller's current value.

    An aggregation that combines advantages (PAMA) gets the estimator's advantages for each objective on its
    own, each against its own value head when there is a critic, each transformed before they are combined
    (whitening after PAMA's Noon clipping would bring negative advantages back)."""
    def advantages_of(rewards, values):
        inputs = AdvantageInputs(replace(experience, rewards=rewards, values=values), algo.group_size,
                                 algo.estimator, kl_coef, algo.kl.reward_estimator)
        advantages = estimate(inputs)
        returns = (advantages + values) * experience.mask if values is not None else None
        scorable = experience.mask * ~torch.isnan(rewards)[:, None]  # unscorable rows stay out of the whitening
        for transform in transforms:
            advantages = transform(advantages, scorable, context)
        return advantages, returns

    metrics = {}
    if aggregation.per_objective_advantages:
        objectives, values = experience.objective_rewards, experience.values
        per_head = values is not None and values.dim() == 3
        parts = [advantages_of(objectives[:, k], values[..., k] if per_head else values)
                 for k in range(objectives.shape[1])]
        per_objective = torch.stack([advantages for advantages, _ in parts], -1)
        if values is not None:
            returns = [r for _, r in parts]
            experience.returns = torch.stack(returns, -1) if per_head else returns[0]
        ratio = (torch.exp(experience.rollout_logp - experience.ref_logp) if algo.loss.ratio_against == "reference"
                 else torch.ones_like(experience.mask))
        advantages, metrics = aggregation.combine_advantages(per_objective, experience.mask, ratio,
                                                             algo.loss.clip_eps_high)
    else:
        advantages, experience.returns = advantages_of(experience.rewards, experience.values)
    experience.advantages = advantages
    return metrics


def training_batch(experience: Experience, topped_up_rows: int, transforms=(),
                   context: TransformContext | None = None) -> Experience:
    """What the learners train on: the batch without its trailing `topped_up_rows` (DAPO's fill) and without
    the rows the `training`-stage transforms drop (e.g. mask_truncated), each masked out of the loss."""
    keep = torch.arange(experience.size) < experience.size - topped_up_rows
    for transform in transforms:
        keep &= transform(experience, context)
    return experience.keeping(keep) if not keep.all() else experience


def train(actors: Actors, experience: Experience, train_policy: bool) -> dict[str, float]:
    """Policy and critic train side by side (the policy waits out the critic's warm-up); every rank gets the
    batch and trains on its share. (A learner rank that dies ends the run: its optimizer state is gone.)"""
    learners = ([actors.policy] if train_policy else []) + ([actors.critic] if actors.critic else [])
    batch = ray.put(experience)
    results = [ray.get(refs) for refs in [learner.call("train_step", batch) for learner in learners]]
    return {key: value for per_rank in results for key, value in LearnerGroup.reduce(per_rank).items()}


def reward_logs(reward) -> tuple[dict[str, float], dict[str, list]]:
    """What the reward functions logged since the last call (TRL's `log_metric`: each name's mean; `log_extra`: its
    columns, one value per completion scored)."""
    return ray.get(reward.drain_logs.remote()) if reward is not None else ({}, {})


def report(step: int, metrics: dict, groups: Groups, metrics_log: MetricsLog, bar, samples_per_step: int = 1,
           extra_columns: dict | None = None) -> None:
    if metrics["reward_unscorable"]:
        log.warning("step %d: %d of %d samples unscorable (a reward function returned None/NaN); "
                    "they get advantage 0", step, metrics["reward_unscorable"], len(groups.rewards.total))
    metrics_log.log(step, metrics)
    rows = []
    for i, group in enumerate(groups.samples[:samples_per_step]):  # each group's first sample
        first, size = group[0], len(group)
        row = {"prompt": groups.batch.texts[i], "completion": first.text, "reward": groups.rewards.total[i * size]}
        if hasattr(first, "messages"):  # an episode: its prompt and every turn
            row.update(prompt=first.prompt, episode=first.messages, turns=first.turns, truncated=first.truncated)
        # log_extra's columns, by the order the samples were scored (the step's, in a synchronous run)
        row.update({column: values[i * size] for column, values in (extra_columns or {}).items()
                    if i * size < len(values)})
        rows.append(row)
    metrics_log.log_samples(step, rows)
    bar.set_postfix(reward=f"{metrics['reward']:.3f}", kl=f"{metrics['rollout_kl']:.4f}",
                    len=f"{metrics['completion_length']:.0f}", s_per_step=f"{metrics['time/step']:.1f}")
    if step % 5 == 4:
        metrics_log.plot()


def check_model_fits(model_path: str, cfg: Config) -> None:
    """What the policy model's config rules out: a token budget over its context, LoRA on tied embeddings."""
    from transformers import AutoConfig

    from rlhf.training.lora import check_tied_targets

    model_config = AutoConfig.from_pretrained(model_path)
    if cfg.train.lora.rank:
        check_tied_targets(cfg.train.lora.target_modules, getattr(model_config, "tie_word_embeddings", False))
    context = model_config.max_position_embeddings
    needed = cfg.data.max_prompt_tokens + cfg.completion_budget()
    if needed > context:
        budget = "env.max_episode_tokens" if cfg.env.enabled else "rollout.max_new_tokens"
        raise ValueError(f"data.max_prompt_tokens + {budget} = {needed} exceeds the model's context "
                         f"of {context} tokens; lower one of them")


def check_resumable(folder: Path | None, state: dict | None, warm_start: bool) -> None:
    """An RL run resumes an RL run's checkpoint, or one its warm start wrote (then it needs its warm start)."""
    if state is None:
        return
    if state.get("phase") == WARM_START and not warm_start:
        raise ValueError(f"{folder} was written during a warm start (sft.steps > 0): resume it with its sft settings")
    if "sft" in state and state.get("phase") != WARM_START:
        raise ValueError(f"{folder} was written by an algo=sft run: resume it with algo=sft")


def check_overlap_route(mode: str, route: str) -> None:
    """One-step-off over a GPU route that pushes in several actor calls: each call waits behind the background
    rollout's generate call on the same actor, so the push serialises behind it and can pass rollout.sync_timeout_s
    (async pauses its stream for a push instead)."""
    if mode == "one_step_off" and route in ("cuda_ipc", "nccl"):
        raise ValueError(f"rollout.mode=one_step_off over the {route} weight route: its push would wait behind the "
                         "background rollout's generate call on every engine (no overlap, and the push can pass "
                         "rollout.sync_timeout_s); use rollout.mode=async, whose stream pauses for a push, or "
                         "rollout.weight_sync=shm / object_store")


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
        ray.init(address=address, log_to_driver=cfg.logging.console != "quiet")
        return False
    # Workers import `rlhf` and `actors` from this checkout, wherever the driver was started from.
    repo = str(Path(__file__).resolve().parents[1])
    ray.init(address="local", num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus, include_dashboard=False,
             log_to_driver=cfg.logging.console != "quiet",  # the actors' output is in their logs/ files
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
