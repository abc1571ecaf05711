"""`python -m rlhf.train` as a subprocess for the benchmark scripts: run it, keep its log, return its metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train(overrides: list[str], out: Path, what: str) -> list[dict]:
    """Run with `overrides` into `out` (its own Ray instance); every step's metrics. `what` names the setting in
    the error when the run fails."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(out / "run.log", "w") as log:
        code = subprocess.run([sys.executable, "-m", "rlhf.train", *overrides, f"output_dir={out}",
                               f"hydra.run.dir={out}"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"{what}: the run failed (exit {code}); see {out / 'run.log'}")
    return read_history(out)


def read_history(out: Path) -> list[dict]:
    """Every step's metrics of the run in `out`."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
