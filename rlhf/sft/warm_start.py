"""A warm start inside an RL run (`sft.steps` > 0): before the first RL step the policy learner trains on demonstrations
(`sft.data`, overrides of `data`, rendered as the run renders its episodes) for `sft.steps` steps at `sft.lr`, on the
same actor and engine; then the RL phase begins from those weights with a fresh optimizer state at `train.lr`, the
weights pushed to the engines, so its first rollout samples the warm-started policy.

The reference: with `sft.reference=policy` (default) the warm-started policy, loaded from `<output_dir>/warm_start/`
(the warm-started model as a HF folder) into the policy actor, which scores it as it scores a LoRA run's base model
(no reference actor is started); `sft.reference=base` keeps the reference actor on the model folder.

Both phases are in metrics.jsonl: the warm start's lines first, at steps -sft.steps .. -1 with `phase: sft` (the RL
steps keep their numbers 0 .. steps-1, `phase: rl`), and in reward_curve.png. An evaluation (eval.every > 0) runs
before the warm start (the base model, at step -sft.steps) and, as in any run, at step 0 (the warm-started one).

Checkpoints: the warm start writes them as the RL phase does (every `checkpoint.every` of its steps, after its last,
and on a stop), at its own negative steps (`step--00003`), holding the learner's state (the SFT optimizer's) and the
demonstrations' cursor (`driver.json`: `phase: warm_start`). A resume lands in whichever phase it stopped: in the warm
start it continues it from there (then the RL phase begins as it would have); in the RL phase it keeps the RL
checkpoint's weights and reloads the warm-started reference from `warm_start/`.
"""

import logging
import time
from pathlib import Path

import ray
from tqdm import tqdm

from rlhf.checkpoint import save_checkpoint, save_learners
from rlhf.console import eval_line
from rlhf.rollout.timing import PhaseTimer
from rlhf.sft.data import Demonstrations, warm_start_demonstrations
from rlhf.sft import steps as sft_steps

log = logging.getLogger(__name__)
FOLDER = "warm_start"
PHASE = "warm_start"  # driver.json's `phase` in a checkpoint written during the warm start


class WarmStart:
    def __init__(self, cfg, tokenizer):
        """Built before any actor: demonstrations that cannot serve stop the run at once."""
        self.cfg = cfg
        self.demos: Demonstrations = warm_start_demonstrations(cfg, tokenizer)
        sft_steps.check_budget(cfg, self.demos)
        self.folder = Path(cfg.output_dir).absolute() / FOLDER

    def preflight_case(self) -> tuple[int, int, int]:
        """The heaviest SFT micro-batch of the warm start (the memory pre-flight's case)."""
        return sft_steps.preflight_case(self.cfg, self.demos)

    def summary(self) -> str:
        s = self.cfg.sft
        return (f"warm start: {s.steps} SFT steps of {s.batch_size} demonstrations at lr {s.lr:g} ({len(self.demos)} "
                f"demonstrations, {self.demos.targets()} target tokens), then RL from those weights; reference: "
                f"{'the warm-started policy' if s.reference == 'policy' else 'the model folder'}")

    def run(self, trainer, state: dict | None = None) -> bool:
        """The warm start on `trainer`'s learner, its lines logged; the engines and the reference get its weights.
        `state`: the driver state of a warm-start checkpoint to continue from (`trainer.resume_from`). False when a stop
        request ended it (after its checkpoint)."""
        cfg, policy, steps = self.cfg, trainer.actors.policy, self.cfg.sft.steps
        log.info("%s", self.summary())
        ray.get(policy.call("start_sft", cfg.sft.lr))
        first = 0
        if state is not None:  # the SFT optimizer's state and schedule, and the demonstrations' cursor
            ray.get(policy.call("load_checkpoint", str(trainer.resume_from / "policy")))
            self.demos.load_state_dict(state["sft"])
            first = state["step"] + steps + 1
            log.info("resumed from %s: the warm start continues at step %d", trainer.resume_from, first - steps)
        bar = tqdm(range(first, steps), desc="warm start", disable=not cfg.logging.progress_bar, dynamic_ncols=True,
                   initial=first, total=steps)
        for j in bar:
            timer = PhaseTimer()
            evaluated = self.evaluate_base(trainer, -steps, timer) if j == 0 else {}
            indices = self.demos.draw(cfg.sft.batch_size)
            cursor = self.demos.state_dict()  # where a resume continues
            with timer("train"):
                metrics = sft_steps.train(policy, self.demos.sequences(indices), cfg)
            trainer.metrics_log.log(j - steps, {"phase": "sft", **metrics, **evaluated, **timer.seconds()})
            bar.set_postfix(loss=f"{metrics['sft/loss']:.3f}", acc=f"{metrics['sft/token_accuracy']:.3f}",
                            tok_s=f"{metrics['sft/tokens_per_s']:.0f}")
            if self.checkpoint_due(j) or (trainer.stop.requested and cfg.checkpoint.on_stop):
                self.save(trainer, j - steps, cursor)
            if trainer.stop.requested:
                trainer.stop.after_step = j - steps
                log.warning("step %d (warm start): stopped by signal; resume with resume=auto", j - steps)
                return False
        self.finish(trainer)
        return True

    def checkpoint_due(self, j: int) -> bool:
        """After warm-start step j (0-based): every checkpoint.every steps and after the last."""
        every = self.cfg.checkpoint.every
        return every > 0 and ((j + 1) % every == 0 or j == self.cfg.sft.steps - 1)

    def save(self, trainer, step: int, cursor: dict) -> None:
        state = {"step": step, "phase": PHASE, "sft": cursor, "wandb_id": trainer.metrics_log.wandb_id}
        path = save_checkpoint(trainer.checkpoints, step, lambda folder: save_learners(trainer.actors, folder), state,
                               self.cfg.checkpoint.keep_last, trainer.best_checkpoint())
        log.info("step %d (warm start): checkpoint written to %s", step, path)

    def finish(self, trainer) -> None:
        """The RL phase from the warm-started weights: a fresh optimizer at train.lr, the policy saved as the
        reference and pushed to the engines."""
        cfg, policy = self.cfg, trainer.actors.policy
        started = time.perf_counter()
        ray.get(policy.call("end_sft", cfg.train.lr))  # the RL phase: DeepSpeed's own accumulation, a fresh optimizer
        policy.run("save_pretrained", str(self.folder), trainer.model_path)
        self.load_reference(trainer)
        trainer.weight_sync.push()  # the first rollout samples the warm-started policy
        trainer.metrics_log.phase = "rl"
        log.info("warm start done: the policy saved to %s and pushed to the engines (%.1f s)%s", self.folder,
                 time.perf_counter() - started, "; it is the reference" if cfg.sft.reference == "policy" else "")

    @staticmethod
    def evaluate_base(trainer, step: int, timer: PhaseTimer) -> dict[str, float]:
        """The model folder's figures, before the warm start (whatever eval.every)."""
        if trainer.evaluator is None:
            return {}
        with timer("eval"):
            metrics = trainer.evaluator.evaluate(step, trainer.weight_sync.version, trainer.output_dir)
        log.info("%s (before the warm start)", eval_line(step, metrics, trainer.evaluator.passing))
        return metrics

    def resume(self, trainer) -> None:
        """A resume of an RL checkpoint: the warm start is behind it; its reference comes back from its folder."""
        if not (self.folder / "config.json").exists() and self.cfg.sft.reference == "policy":
            raise ValueError(f"resuming a warm-started run needs its warm-started policy in {self.folder} (the "
                             "reference, sft.reference=policy); it is missing")
        self.load_reference(trainer)
        trainer.metrics_log.phase = "rl"

    def load_reference(self, trainer) -> None:
        if self.cfg.sft.reference == "policy" and trainer.actors.reference is not None:
            ray.get(trainer.actors.policy.call("load_reference", str(self.folder), self.cfg.train.bf16,
                                               self.cfg.train.attn_implementation))
