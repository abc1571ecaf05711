"""BLEUBERI's selection script: the ranking rule, and a real run on the tiny model through the rollout engine."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from select_bleuberi import select  # noqa: E402


def test_selection_modes():
    scores = [0.5, 0.1, math.nan, 0.9, 0.3]
    assert select(scores, 2, "hard", 0) == [1, 4]  # lowest first; the unscorable row never counts as hard
    assert select(scores, 2, "easy", 0) == [3, 0]
    assert select(scores, 2, "medium", 0) == [4, 0]
    assert select(scores, 2, "random", 0) == select(scores, 2, "random", 0) and len(select(scores, 9, "random", 0)) == 5
    with pytest.raises(ValueError, match="unknown selection mode"):
        select(scores, 2, "hardest", 0)


@pytest.mark.integration
def test_the_hardest_prompts_feed_the_bleuberi_preset(tmp_path):
    pool = tmp_path / "pool.jsonl"
    with open(pool, "w") as f:
        for i in range(12):
            f.write(json.dumps({"prompt": f"Say something, request {i}.", "references": ["the cat sat on the mat"] if i % 2
                                else ["a a a"], "answer": str(i)}) + "\n")
    out = tmp_path / "hard.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "scripts/select_bleuberi.py", "--num", "4", "--out", str(out), "--",
         "model=tiny", "data=file", f"data.path={pool}", "rollout.max_new_tokens=8", "logging.progress_bar=false",
         "rollout.engine=hf"],  # ~10 s sooner to start than vLLM on the tiny model
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and out.with_suffix(".png").exists()
    assert [r["selection_score"] for r in rows] == sorted(r["selection_score"] for r in rows)
    assert all(r["base_completion"] is not None and r["references"] for r in rows)
    printed = result.stdout.split("scores ")[1]
    assert float(printed.split(" .. ")[1].split()[0]) == pytest.approx(rows[-1]["selection_score"], abs=1e-4)

    from rlhf.config import compose_config, load_config
    from rlhf.data import load_rows

    cfg = load_config(compose_config("experiment=bleuberi", f"data.path={out}", "output_dir=/tmp/unused"))
    assert cfg.algo.group_size == 8 and cfg.train.lr == 1e-6
    assert [r["prompt"] for r in load_rows(cfg.data)] == [r["prompt"] for r in rows]
