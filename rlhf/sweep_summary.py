"""A Hydra callback: when a sweep (`-m`) ends, one table of every member's overrides and final metrics.

Writes `summary.csv` and `summary.md` into the sweep folder. A member that failed or never logged a step
shows up with its status rather than disappearing from the table.
"""

import csv
import json
from pathlib import Path

from hydra.experimental.callback import Callback

COLUMNS = ("reward", "rollout_kl", "completion_length", "time/step")
TAIL = 5  # steps averaged for the final value of a metric


def summarise(sweep_dir: Path) -> list[dict]:
    rows = []
    for member in sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=_member_number):
        overrides = (member / ".hydra" / "overrides.yaml").read_text().splitlines()
        row = {"member": member.name, "overrides": " ".join(o.lstrip("- ").strip() for o in overrides)}
        metrics = member / "metrics.jsonl"
        history = []
        if metrics.exists():
            lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.endswith("}")]
            history = [h for h in lines if "reward" in h]  # training steps: the final evaluation's line is none
        row["steps"] = len(history)
        row["status"] = "finished" if (member / "final").exists() or history else "no steps logged"
        for key in COLUMNS:
            values = [h[key] for h in history[-TAIL:] if key in h]
            row[key] = sum(values) / len(values) if values else None
        rows.append(row)
    return rows


def write_summary(sweep_dir: Path) -> list[dict]:
    rows = summarise(sweep_dir)
    if not rows:
        return rows
    fields = list(rows[0])
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    cell = lambda v: "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"| {' | '.join(fields)} |", f"|{'---|' * len(fields)}"]
    lines += [f"| {' | '.join(cell(row[k]) for k in fields)} |" for row in rows]
    (sweep_dir / "summary.md").write_text(f"Final values: mean of each member's last {TAIL} steps.\n\n"
                                          + "\n".join(lines) + "\n")
    return rows


def _member_number(path: Path) -> tuple:
    head = path.name.split("-")[0]
    return (int(head), path.name) if head.isdigit() else (10**9, path.name)


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = write_summary(sweep_dir)
            print(f"sweep summary of {len(rows)} members: {sweep_dir / 'summary.md'}")
