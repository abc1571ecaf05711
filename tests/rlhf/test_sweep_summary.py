import json

from rlhf.sweep_summary import write_summary


def member(sweep, name, overrides, rewards):
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if rewards is not None:
        lines = [{"step": i, "reward": r, "time/step": 2.0} for i, r in enumerate(rewards)]
        lines.append({"step": len(rewards), "eval/bleu": 0.3})  # the final weights' evaluation: not a step
        (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_every_member_gets_a_row_in_sweep_order(tmp_path):
    member(tmp_path, "10-train.lr=0.1", ["train.lr=0.1"], [0.0] * 4 + [1.0] * 5)
    member(tmp_path, "2-train.lr=0.01", ["train.lr=0.01"], [0.5])
    member(tmp_path, "3-train.lr=9", ["train.lr=9"], None)  # crashed before its first step
    rows = write_summary(tmp_path)
    assert [r["member"] for r in rows] == ["2-train.lr=0.01", "3-train.lr=9", "10-train.lr=0.1"]
    assert rows[2]["reward"] == 1.0 and rows[2]["steps"] == 9  # the mean of the last 5 steps
    assert rows[1]["status"] == "no steps logged" and rows[1]["reward"] is None
    table = (tmp_path / "summary.md").read_text()
    assert "| 10-train.lr=0.1 | train.lr=0.1 | 9 | finished | 1 |" in table
