"""`algo=sft`: supervised fine-tuning as a run of its own, top-down: draw demonstrations, cut them into micro-batches
by the token budget, train the policy learner on them, evaluate, log, checkpoint.

It runs on the RL run's pieces: the policy learner actors (DeepSpeed ZeRO 0-3 over `train.ranks`, LoRA), checkpoints
and exact resume (`rlhf/checkpoint.py`: the learner's state and the demonstrations' cursor), metrics.jsonl and wandb,
the progress bar, console summaries, `final/`. No reference, reward or critic trains. With `eval.every` > 0 the
rollout engines start (and the reward functions that score them): every `eval.every` steps the current weights are
pushed to them and the run's `Evaluator` generates on the held-out demonstrations' prompts, scored against their
targets (so held-out BLEU is the RL run's figure), beside `eval/nll`, the learner's cross-entropy of their targets.
"""

import logging
import time
from dataclasses import replace
from pathlib import Path

import ray
from tqdm import tqdm

from actors.launch import Actors, launch_actors
from actors.learner_group import RankDied
from rlhf.checkpoint import save_checkpoint, save_learners
from rlhf.config import Config, settings_that_cannot_act
from rlhf.console import eval_line
from rlhf.driver import Trainer, check_model_fits, check_preflight, checkpoint_due, connect_ray, open_checkpoints, \
    open_metrics_log, rollout_preflight, run_stopped, save_final, weight_route
from rlhf.evaluation import Evaluator
from rlhf.evaluation import due as evaluation_due
from rlhf.models import resolve_model_path
from rlhf.rewards.scoring import check_reward_sources
from rlhf.rollout.recovery import ACTOR_DIED, ACTOR_RESTARTED, wait_for_restarts
from rlhf.rollout.scoring import reward_columns
from rlhf.rollout.sources import rollout_source
from rlhf.rollout.timing import PhaseTimer
from rlhf.sft import steps as sft_steps
from rlhf.sft.data import demonstration_sets
from rlhf.sft.plots import SftMetricsLog, sft_final_summary
from rlhf.sft.warm_start import PHASE as WARM_START
from rlhf.stopping import StopRequest

log = logging.getLogger(__name__)


def run_sft(cfg: Config, stop: StopRequest) -> dict[str, float]:
    trainer = SftTrainer(cfg, stop)
    try:
        return trainer.train()
    finally:
        trainer.close()


def actor_config(cfg: Config) -> Config:
    """What `launch_actors` starts for SFT: the policy learner; engines and the scorers of their completions only
    with evaluation (the run's reward functions, or eval.rewards' actor)."""
    reward = cfg.reward
    if not cfg.eval.every or cfg.eval.rewards:
        reward = replace(reward, functions=[], models=[])
    return replace(cfg, reward=reward, rollout=replace(cfg.rollout, engines=cfg.rollout.engines if cfg.eval.every else 0))


class SftTrainer:
    """One SFT run: its actors, demonstrations and loop state."""

    best_checkpoint = Trainer.best_checkpoint  # the same rule as an RL run's (checkpoint.keep_best)

    def __init__(self, cfg: Config, stop: StopRequest):
        from transformers import AutoTokenizer

        self.cfg, self.stop = cfg, stop
        self.output_dir = Path(cfg.output_dir).absolute()
        self.model_path = resolve_model_path(cfg.model.source, cfg.model.path)
        tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        check_model_fits(self.model_path, cfg)
        # the evaluation's generation: single turns, or episodes (the demonstrations' tools)
        self.source = rollout_source(None, cfg, tokenizer) if cfg.eval.every else None
        self.overhead = self.source.prompt_overhead() if self.source is not None else 0
        self.demos, self.held_out, self.eval_prompts = demonstration_sets(cfg, tokenizer, self.overhead)
        sft_steps.check_budget(cfg, self.demos, self.held_out)

        self.checkpoints, self.resume_from, self.state = open_checkpoints(cfg, self.output_dir)
        if self.state and ("sft" not in self.state or self.state.get("phase") == WARM_START):
            raise ValueError(f"{self.resume_from} was written by an RL run (or its warm start): resume it with its "
                             "algorithm")
        if self.eval_prompts is not None:  # the eval's scorers, before any actor
            columns = reward_columns(self.eval_prompts.rows[0], cfg.env.enabled)
            functions = cfg.eval.rewards or cfg.reward.functions
            check_reward_sources(replace(cfg.reward, functions=functions, models=[] if cfg.eval.rewards
                                         else cfg.reward.models), columns, bool(cfg.env.factory),
                                 "eval.rewards" if cfg.eval.rewards else "reward.functions (scoring the eval)")
        self.started_ray = connect_ray(cfg)
        self.stop.install()
        self.weight_sync = None
        try:
            self.actors: Actors = launch_actors(actor_config(cfg), self.model_path)
            if self.actors.rollouts:
                self.weight_sync = weight_route(cfg, self.actors, overlap=False)
            self.metrics_log = open_metrics_log(SftMetricsLog, cfg, self.output_dir, self.state)
        except BaseException:
            if self.started_ray:
                ray.shutdown()
            raise
        log.info("%s", self.startup_summary())
        for warning in settings_that_cannot_act(cfg):
            log.warning(warning)
        if self.source is not None:
            self.source.bind(self.actors)
        self.evaluator = Evaluator(self.actors, cfg, self.eval_prompts, self.source) if self.eval_prompts else None
        self.pushed = True  # the engines hold the learner's weights (both the model folder's at the start)
        self.restarted = False  # an evaluation met a dead actor

    def startup_summary(self) -> str:
        cfg, roles = self.cfg, self.actors.placement.demands
        where = ", ".join(f"{role} {d.count} x ({d.num_cpus:g} CPU" + (f", {d.num_gpus:g} GPU)" if d.num_gpus else ")")
                          for role, d in roles.items())
        held = f", {len(self.held_out)} held out" if self.held_out is not None else ""
        budget = cfg.train.max_tokens_per_micro_batch
        micro = (f"micro-batches of at most {budget} token positions" if budget is not None
                 else f"micro-batches of {cfg.train.micro_batch_size} demonstrations")
        return "\n".join([
            f"model {cfg.model.source} {cfg.model.path or ''}".rstrip() + f"; algorithm sft ({len(self.demos)} "
            f"demonstrations{held}, {self.demos.targets()} target tokens, the longest {self.demos.longest()} tokens)",
            f"roles ({cfg.placement.layout}): {where}" + (f"; weights through {self.weight_sync.name}"
                                                          if self.weight_sync else ""),
            f"{cfg.steps} steps of {cfg.sft.batch_size} demonstrations at lr {cfg.train.lr:g}, {micro}; outputs in "
            f"{cfg.output_dir} (actors' logs in logs/)"])

    def train(self) -> dict[str, float]:
        started = time.perf_counter()
        try:
            return self._train()
        finally:
            log.info("%s", sft_final_summary(self.metrics_log.history, time.perf_counter() - started,
                                             str(self.output_dir)))

    def _train(self) -> dict[str, float]:
        cfg = self.cfg
        first_step = self.prepare()
        bar = tqdm(range(first_step, cfg.steps), desc="sft", disable=not cfg.logging.progress_bar,
                   dynamic_ncols=True, initial=first_step, total=cfg.steps)
        metrics, step = {}, first_step
        try:
            for step in bar:
                if self.stop.requested:
                    self.stop.after_step = step - 1
                    return metrics
                timer = PhaseTimer()
                eval_metrics = self.evaluate(step, timer)  # the weights of `step` updates
                indices = self.demos.draw(cfg.sft.batch_size)
                cursor = self.demos.state_dict()  # where a resume continues
                with timer("train"):
                    metrics = self.learn(indices)
                metrics = {**metrics, **eval_metrics, **timer.seconds()}
                self.metrics_log.log(step, {"phase": "sft", **metrics})
                bar.set_postfix(loss=f"{metrics['sft/loss']:.3f}", acc=f"{metrics['sft/token_accuracy']:.3f}",
                                tok_s=f"{metrics['sft/tokens_per_s']:.0f}", s_per_step=f"{metrics['time/step']:.1f}")
                if step % 5 == 4:
                    self.metrics_log.plot()
                if checkpoint_due(step, cfg) or (self.stop.requested and cfg.checkpoint.on_stop):
                    self.save(step, cursor)
                if self.stop.requested:
                    self.stop.after_step = step
                    log.warning("step %d: stopped by signal; resume with resume=auto", step)
                    return metrics
        except (*ACTOR_DIED, RankDied) as err:
            raise run_stopped(step, f"a learner rank died ({type(err).__name__})", self.checkpoints,
                              self.output_dir) from err
        final_eval = self.evaluate(cfg.steps, PhaseTimer())
        if final_eval:
            self.metrics_log.log(cfg.steps, {"phase": "sft", **final_eval})
            metrics = {**metrics, **final_eval}
        if cfg.save_final:
            save_final(self.actors, self.output_dir, self.model_path)
        return metrics

    def prepare(self) -> int:
        if self.cfg.preflight.enabled:
            self.memory_preflight()
        if not self.state:
            return 0
        ray.get(self.actors.policy.call("load_checkpoint", str(self.resume_from / "policy")))
        self.demos.load_state_dict(self.state["sft"])
        self.pushed = False
        log.info("resumed from %s: continuing at step %d", self.resume_from, self.state["step"] + 1)
        return self.state["step"] + 1

    def memory_preflight(self) -> None:
        """As an RL run's (rlhf/driver.py::memory_preflight): the policy ranks run the heaviest SFT micro-batch (of a
        step, or of the held-out evaluation), the engines the evaluation's generation (every held-out prompt at the
        longest one's length, eval.samples each, the whole budget), the scorers theirs; stops a run that would not
        fit before its first step."""
        cfg, started = self.cfg, time.perf_counter()
        prompt, count = [], 0
        if self.eval_prompts is not None:
            prompt = max(self.eval_prompts.token_ids, key=len)
            prompt = prompt + prompt[-1:] * self.overhead  # an episode's prompt: the tools' descriptions too
            count = len(self.eval_prompts.token_ids)
        pending = rollout_preflight(self.actors, cfg, prompt, count, cfg.eval.samples,
                                    cfg.eval.max_new_tokens or cfg.completion_budget())
        pending += self.actors.policy.call("sft_preflight", *sft_steps.preflight_case(cfg, self.demos, self.held_out))
        check_preflight(pending, cfg, self.output_dir, started)

    def learn(self, indices: list[int]) -> dict[str, float]:
        metrics = sft_steps.train(self.actors.policy, self.demos.sequences(indices), self.cfg)
        self.pushed = False
        return metrics

    def evaluate(self, step: int, timer: PhaseTimer) -> dict[str, float]:
        if not evaluation_due(step, self.cfg) or self.held_out is None:
            return {}
        with timer("eval"):
            metrics = self.held_out_nll()
            if self.evaluator is not None:
                try:
                    if self.restarted:  # an engine or scorer died at the last evaluation: Ray restarted it
                        wait_for_restarts(self.actors)
                        self.restarted, self.pushed = False, False
                    if not self.pushed:
                        self.weight_sync.push()
                        self.pushed = True
                    metrics.update(self.evaluator.evaluate(step, self.weight_sync.version, self.output_dir))
                except ACTOR_RESTARTED as err:  # the next evaluation waits for the restart and pushes again
                    log.warning("step %d: evaluation skipped: an engine or reward actor died or is restarting (%s)",
                                step, type(err).__name__)
                    self.restarted = True
        log.info("%s", eval_line(step, metrics, self.evaluator.passing) if self.evaluator else
                 f"step {step} eval: nll {metrics['eval/nll']:.4g}")
        return metrics

    def held_out_nll(self) -> dict[str, float]:
        return {"eval/nll": sft_steps.nll(self.actors.policy, self.held_out.everything(), self.cfg)}

    def save(self, step: int, cursor: dict) -> None:
        state = {"step": step, "sft": cursor, "wandb_id": self.metrics_log.wandb_id}
        path = save_checkpoint(self.checkpoints, step, lambda folder: save_learners(self.actors, folder), state,
                               self.cfg.checkpoint.keep_last, self.best_checkpoint())
        log.info("step %d: checkpoint written to %s", step, path)

    def close(self) -> None:
        if self.weight_sync is not None:
            self.weight_sync.close()
        if self.source is not None:
            self.source.close()
        self.metrics_log.close()
        self.actors.kill()
        if self.started_ray:
            ray.shutdown()

