"""Where metrics go: a JSONL file (one line per step, flushed), wandb (offline by default), a reward plot."""

import json
import math
import os
from pathlib import Path


class MetricsLog:
    def __init__(self, output_dir: str, run_name: str, wandb_mode: str, project: str, entity: str | None,
                 config: dict, plot: bool):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.plot_enabled = plot
        self.history: list[dict] = []
        self._file = open(self.path, "a", encoding="utf-8")  # append: earlier lines are never rewritten
        self.wandb = None
        if wandb_mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_DIR", str(self.dir))
            self.wandb = wandb.init(project=project, entity=entity, name=run_name, dir=str(self.dir),
                                    mode=wandb_mode, config=config, reinit="finish_previous")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.history.append(record)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def log_samples(self, step: int, rows: list[dict]) -> None:
        with open(self.dir / "samples.jsonl", "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}) + "\n")

    def plot(self) -> Path | None:
        if not self.plot_enabled or not self.history:
            return None
        return plot_curves(self.history, self.dir / "reward_curve.png")

    def close(self) -> None:
        self.plot()
        self._file.close()
        if self.wandb is not None:
            self.wandb.finish()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    _pyplot().close(fig)
    os.replace(tmp, path)  # readers never see a half-written picture
    return path


def plot_comparison(curves: dict[str, list[float]], path: Path) -> Path:
    """Several runs' reward against the step, on one axis."""
    fig, ax = _pyplot().subplots(figsize=(7, 4))
    for name, rewards in curves.items():
        ax.plot(range(len(rewards)), rewards, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(history: list[dict], path: Path) -> Path:
    """Reward (with per-function rewards), KL and completion length against the step."""
    steps = [h["step"] for h in history]
    per_function = [k for k in history[-1] if k.startswith("reward/")]
    panels = [("reward", ["reward", *per_function] if len(per_function) > 1 else ["reward"]),
              ("KL to the reference (per sequence)", ["rollout_kl"]),
              ("completion length", ["completion_length"])]
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            values = [h.get(key, math.nan) for h in history]
            line, = ax.plot(steps, values, label=key, alpha=0.5, marker="." if len(steps) < 50 else None)
            if len(values) >= 10:  # per-step values are noisy: draw the trend over it
                window = max(5, len(values) // 10)
                trend = [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
                         for i in range(len(values))]
                ax.plot(steps, trend, color=line.get_color(), linewidth=2, label=f"{key} (mean of {window})")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _plain(value):
    return value.item() if hasattr(value, "item") else value
