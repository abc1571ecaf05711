"""What an SFT run logs beyond an RL run's: its curves (loss, token accuracy, the held-out figures) and its final
summary."""

import math
from pathlib import Path

from rlhf.console import eval_progress
from rlhf.tracking import MetricsLog, draw_panels


class SftMetricsLog(MetricsLog):
    """metrics.jsonl and wandb as an RL run's; `reward_curve.png` holds the SFT curves."""

    def plot(self) -> Path | None:
        if not self.plot_enabled or not self.history:
            return None
        return plot_sft(self.history, self.dir / "reward_curve.png")


def plot_sft(history: list[dict], path: Path) -> Path:
    """sft/loss and sft/token_accuracy against the step; eval/nll and the held-out objectives in panels of their own.
    Lines of an RL phase (a warm-started run's) add its reward."""
    evaluated = [k for k in dict.fromkeys(k for h in history for k in h)
                 if k.startswith("eval/") and k not in ("eval/length", "eval/nll")]
    panels = [("SFT loss (per target token)", ["sft/loss"]), ("token accuracy", ["sft/token_accuracy"])]
    if any("eval/nll" in h for h in history):
        panels.append(("held-out NLL (per target token)", ["eval/nll"]))
    if evaluated:
        panels.append(("eval (held-out prompts)", evaluated))
    if any("reward" in h for h in history):
        panels.append(("reward (RL phase)", ["reward"]))
    return draw_panels(history, panels, path, _line)


def _line(ax, key: str, steps: list, values: list) -> None:
    """The values without the NaN ones (a step whose figure could not be computed), one point each when few."""
    points = [(s, v) for s, v in zip(steps, values) if not _nan(v)]
    ax.plot([s for s, _ in points], [v for _, v in points], label=key, marker="." if len(points) < 50 else None)


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def sft_final_summary(history: list[dict], seconds: float, output_dir: str) -> str:
    steps = [h for h in history if "sft/loss" in h]
    if not steps:
        return f"no step taken in {seconds:.0f} s; outputs in {output_dir}"
    n = min(5, len(steps))
    mean = lambda rows, key: sum(h[key] for h in rows) / len(rows)  # noqa: E731
    per_step = mean(steps, "time/step")
    tokens = sum(h["sft/input_tokens"] for h in steps) / max(sum(h["time/learner"] for h in steps), 1e-9)
    lines = [f"{len(steps)} SFT steps in {seconds / 60:.1f} min ({per_step:.1f} s/step, {tokens:.0f} tokens/s while "
             f"training); loss {mean(steps[:n], 'sft/loss'):.4g} -> {mean(steps[-n:], 'sft/loss'):.4g}, token accuracy "
             f"{mean(steps[:n], 'sft/token_accuracy'):.3f} -> {mean(steps[-n:], 'sft/token_accuracy'):.3f} (means of the "
             f"first and last {n} steps)"]
    lines += filter(None, [eval_progress(history), f"outputs in {output_dir}"])
    return "\n".join(lines)
