"""Where metrics go: a JSONL file (one line per step, flushed), wandb (offline by default), a reward plot."""

import json
import math
import os
import time
from pathlib import Path

from rlhf.models.folders import write_text_atomically


class MetricsLog:
    """Appends to `metrics.jsonl` and `samples.jsonl`. A run resumed at step k first moves the lines of steps
    >= k (logged after that checkpoint, about to be redone) to `*.superseded.jsonl`: nothing is deleted."""

    def __init__(self, output_dir: str, run_name: str, wandb_mode: str, project: str, entity: str | None,
                 config: dict, plot: bool, resume_step: int | None = None, wandb_id: str | None = None):
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.plot_enabled = plot
        self.history: list[dict] = []
        if resume_step is not None:
            self.history = _keep_steps_before(self.path, resume_step)
            _keep_steps_before(self.dir / "samples.jsonl", resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        self.phase: str | None = None  # a warm-started run's lines carry theirs (rlhf/sft/warm_start.py)
        self.wandb = None
        if wandb_mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_DIR", str(self.dir))
            for attempt in range(8):
                try:
                    self.wandb = wandb.init(project=project, entity=entity, name=run_name, dir=str(self.dir),
                                            mode=wandb_mode, config=config, reinit="finish_previous",
                                            id=wandb_id, resume="allow" if wandb_id else None)
                    break
                except Exception as err:  # noqa: BLE001 - wandb raises its own kinds
                    # a resume right after a crash: the dead run's wandb service lets its id go once it notices
                    if "is in use" not in str(err) or attempt == 7:
                        raise
                    time.sleep(1 + attempt)

    @property
    def wandb_id(self) -> str | None:
        return self.wandb.id if self.wandb is not None else None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": step, **({"phase": self.phase} if self.phase else {}), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.history.append(record)
        if self.wandb is not None and step >= 0:  # a warm start's lines (steps < 0) only here: wandb's cannot be
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


def _keep_steps_before(path: Path, step: int) -> list[dict]:
    """Rewrite a JSONL log (atomically) with the records of steps before `step`; append the others to the
    `.superseded.jsonl` file beside it. Returns the kept records."""
    if not path.exists():
        return []
    kept, superseded = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            (kept if _step_of(line) < step else superseded).append(line)
    if superseded:
        with open(path.with_suffix(".superseded.jsonl"), "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in superseded))
        write_text_atomically(path, "".join(line + "\n" for line in kept))
    return [json.loads(line) for line in kept]


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a line cut short by a crash


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


def plot_comparison(curves: dict[str, list[float]], path: Path,
                    clipped: dict[str, list[float]] | None = None) -> Path:
    """Several runs' reward against the step, on one axis; with `clipped`, each run's clip fraction (the share of
    tokens, or of GSPO's sequences, its clip acted on) in a panel below."""
    fig, axes = _pyplot().subplots(2 if clipped else 1, 1, figsize=(7, 6.5 if clipped else 4), sharex=True,
                                   squeeze=False)
    for name, rewards in curves.items():
        axes[0, 0].plot(range(len(rewards)), rewards, label=name)
    axes[0, 0].set_ylabel("mean reward")
    axes[0, 0].legend()
    for name, fractions in (clipped or {}).items():
        axes[1, 0].plot(range(len(fractions)), fractions, label=name)
    if clipped:
        axes[1, 0].set_ylabel("clip fraction")
    axes[-1, 0].set_xlabel("step")
    for ax in axes[:, 0]:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_pareto(points: dict[str, list[float]], start: list[float], labels: list[str], path: Path) -> Path:
    """Each run's final pair of objective rewards as a point, with the shared starting point."""
    fig, ax = _pyplot().subplots(figsize=(6, 5))
    ax.scatter([start[0]], [start[1]], marker="x", color="grey", label="start")
    for name, (x, y) in points.items():
        ax.scatter([x], [y], marker="*" if "PAMA" in name else "o", s=120 if "PAMA" in name else 40, label=name)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_curves(history: list[dict], path: Path) -> Path:
    """Reward (with per-function rewards), KL and completion length against the step; with evaluations, the eval
    metrics (held-out prompts) in a panel of their own."""
    return draw_panels(history, curve_panels(history), path, line_with_trend, legend_from=2)


def curve_panels(history: list[dict]) -> list[tuple[str, list[str]]]:
    """The panels of `plot_curves`. The eval panel holds the scores (each objective, pass@k, mean@k): not the
    length nor an episode's counts (turns, tool calls, environment tokens: `rollout/*` in training), whose scale of
    tens or hundreds would flatten the scores to a line at 0."""
    training = [h for h in history if "reward" in h]  # a final evaluation has a line of its own
    per_function = [k for k in training[-1] if k.startswith("reward/")] if training else []
    panels = [("reward", ["reward", *per_function] if len(per_function) > 1 else ["reward"]),
              ("KL to the reference (per sequence)", ["rollout_kl"]),
              ("completion length", ["completion_length"])]
    if any("sft/loss" in h for h in history):  # a warm start (steps < 0)
        panels.insert(0, ("SFT loss (warm start)", ["sft/loss"]))
    counts = {"length", *(k.split("/", 1)[1] for h in training for k in h if k.startswith("rollout/"))}
    evaluated = [k for k in dict.fromkeys(k for h in history for k in h)
                 if k.startswith("eval/") and k.split("/", 1)[1] not in counts]
    if evaluated:
        panels.append(("eval (held-out prompts)", evaluated))
    return panels


def draw_panels(history: list[dict], panels: list[tuple[str, list[str]]], path: Path, line,
                legend_from: int = 1) -> Path:
    """One row of panels, each (title, keys): every key's values against the step, drawn by `line(ax, key, steps,
    values)`; a legend where a panel has `legend_from` keys or more. The RL run's curves and the SFT run's."""
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(h["step"], h[key]) for h in history if key in h]
            line(ax, key, [s for s, _ in points], [v for _, v in points])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) >= legend_from:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def line_with_trend(ax, key: str, steps: list, values: list) -> None:
    """The values, faint, and from 10 of them on (per-step values are noisy) their running mean over it."""
    line, = ax.plot(steps, values, label=key, alpha=0.5, marker="." if len(steps) < 50 else None)
    if len(values) >= 10:
        window = max(5, len(values) // 10)
        trend = [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
                 for i in range(len(values))]
        ax.plot(steps, trend, color=line.get_color(), linewidth=2, label=f"{key} (mean of {window})")


def _plain(value):
    return value.item() if hasattr(value, "item") else value
