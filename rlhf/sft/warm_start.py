"""A warm start inside an RL run (`sft.steps` > 0): before the first RL step the policy learner trains on demonstrations
(`sft.data`, overrides of `data`, rendered as the run renders its episodes) for `sft.steps` steps at `sft.lr`, on the
same actor and engine; then the RL phase begins from those weights with a fresh optimizer state at `train.lr`, the
weights pushed to the engines, so its first rollout samples the warm-started policy.

The reference: with `sft.reference=policy` (default) the warm-started policy, loaded from `<output_dir>/warm_start/`
(the warm-started model as a HF folder) into the policy actor, which scores it as it scores a LoRA run's base model
(no reference actor is started); `sft.reference=base` keeps the reference actor on the model folder.

Both phases are in metrics.jsonl: the warm start's lines first, at steps -sft.steps .. -1 with `phase: sft` (the RL
steps keep their numbers 0 .. steps-1, `phase: rl`), and in reward_curve.png. An evaluation (eval.every > 0) runs
before the warm start (the base model, at step -sft.steps) and, as in any run, at step 0 (the warm-started one). No
checkpoint is written during the warm start: a run stopped in it starts it again; a resume of an RL checkpoint keeps
its weights and reloads the warm-started reference from `warm_start/`.
"""

import logging
import time
from pathlib import Path

import ray
from tqdm import tqdm

from rlhf.console import eval_line
from rlhf.rollout.timing import PhaseTimer
from rlhf.sft.data import Demonstrations, warm_start_demonstrations
from rlhf.sft import steps as sft_steps

log = logging.getLogger(__name__)
FOLDER = "warm_start"


class WarmStart:
    def __init__(self, cfg, tokenizer):
        """Built before any actor: demonstrations that cannot serve stop the run at once."""
        self.cfg = cfg
        self.demos: Demonstrations = warm_start_demonstrations(cfg, tokenizer)
        sft_steps.check_budget(cfg, self.demos)
        self.folder = Path(cfg.output_dir).absolute() / FOLDER

    def summary(self) -> str:
        s = self.cfg.sft
        return (f"warm start: {s.steps} SFT steps of {s.batch_size} demonstrations at lr {s.lr:g} ({len(self.demos)} "
                f"demonstrations, {self.demos.targets()} target tokens), then RL from those weights; reference: "
                f"{'the warm-started policy' if s.reference == 'policy' else 'the model folder'}")

    def run(self, trainer) -> None:
        """The warm start on `trainer`'s learner, its lines logged; the engines and the reference get its weights."""
        cfg, policy, steps = self.cfg, trainer.actors.policy, self.cfg.sft.steps
        log.info("%s", self.summary())
        ray.get(policy.call("start_sft", cfg.sft.lr))
        bar = tqdm(range(steps), desc="warm start", disable=not cfg.logging.progress_bar, dynamic_ncols=True)
        for j in bar:
            timer = PhaseTimer()
            evaluated = self.evaluate_base(trainer, -steps, timer) if j == 0 else {}
            sequences = self.demos.sequences(self.demos.draw(cfg.sft.batch_size))
            with timer("train"):
                metrics = sft_steps.train(policy, sequences, cfg)
            trainer.metrics_log.log(j - steps, {"phase": "sft", **metrics, **evaluated, **timer.seconds()})
            bar.set_postfix(loss=f"{metrics['sft/loss']:.3f}", acc=f"{metrics['sft/token_accuracy']:.3f}",
                            tok_s=f"{metrics['sft/tokens_per_s']:.0f}")
            if trainer.stop.requested:
                raise KeyboardInterrupt  # nothing to checkpoint yet: a resume starts the warm start again
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
