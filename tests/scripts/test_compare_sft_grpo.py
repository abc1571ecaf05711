"""scripts/compare_sft_grpo.py in its --tiny mode: the three arms on the tiny model and the default data, equal
training examples, one held-out evaluator; the JSON, the figure and the table. The runs go in-process on the suite's
Ray instance (the script's own runs are subprocesses: a Ray start each, too slow for the suite)."""

import json
import sys

import pytest

from conftest import REPO
from rlhf.config import compose_config, load_config
from rlhf.driver import run

sys.path.insert(0, str(REPO / "scripts"))
import compare_sft_grpo  # noqa: E402

pytestmark = pytest.mark.integration


def in_process(overrides, out, what):
    run(load_config(compose_config(*overrides, f"output_dir={out}")))
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_tiny_comparison_writes_its_table_json_and_figure(ray_cluster, tmp_path, capsys):
    result = compare_sft_grpo.main(["--tiny", "--out", str(tmp_path)], runner=in_process)
    p = result["plan"]
    assert p == {"match": "prompts", "steps": 2, "sft_batch": 2, "grpo_prompts": 2, "group_size": 4, "warm_steps": 1,
                 "rl_steps_after_warm": 1, "examples_per_step": 2, "examples": 4}
    summary = result["summary"]
    assert list(summary) == ["sft", "grpo", "sft_then_grpo"]
    for s in summary.values():
        assert s["examples"] == 4 and s["seeds"] == [0] and len(s["bleu_per_seed"]) == 1
        assert 0 <= s["bleu_mean"] <= 1 and s["bleu_std"] == 0 and s["wall_s_mean"] > 0 and s["train_s_mean"] > 0
    curves = {r["arm"]: r["curve"] for r in result["runs"]}
    # evaluated every step on the same held-out rows, from the same model folder (greedy: the same start)
    assert [x for x, _ in curves["sft"]] == [x for x, _ in curves["grpo"]] == [0, 2, 4]
    assert [x for x, _ in curves["sft_then_grpo"]] == [0, 2, 4]  # before the warm start, after it, after GRPO
    assert len({c[0][1] for c in curves.values()}) == 1
    assert json.loads((tmp_path / "compare_sft_grpo.json").read_text())["summary"] == summary
    assert (tmp_path / "compare_sft_grpo.png").stat().st_size > 0
    table = capsys.readouterr().out
    assert table.count("| 4 |") == 3 and "| SFT then GRPO |" in table and "every arm 2 optimizer steps" in table
