import json

from rlhf.tracking import MetricsLog


def test_resume_moves_later_steps_aside_and_keeps_earlier_ones(tmp_path):
    lines = [json.dumps({"step": s, "reward": s / 10}) for s in range(5)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "rew')  # a crash cut the last line
    log = MetricsLog(str(tmp_path), "run", "disabled", "p", None, {}, plot=False, resume_step=3)
    assert [h["step"] for h in log.history] == [0, 1, 2]
    log.log(3, {"reward": 0.9})
    log.close()

    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in kept] == [0, 1, 2, 3] and kept[-1]["reward"] == 0.9
    superseded = (tmp_path / "metrics.superseded.jsonl").read_text().splitlines()
    assert superseded[:2] == lines[3:] and superseded[2].startswith('{"step": 5')  # nothing is thrown away


def test_a_fresh_log_appends_to_what_is_there(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "reward": 1.0}\n')
    log = MetricsLog(str(tmp_path), "run", "disabled", "p", None, {}, plot=False)
    log.log(0, {"reward": 2.0})
    log.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_the_eval_panel_holds_the_scores_not_the_episodes_counts():
    from rlhf.tracking import curve_panels

    history = [{"step": 0, "reward": 0.3, "rollout/turns": 6.5, "rollout/env_tokens": 60.0, "eval/GuessNumber": 0.4,
                "eval/pass@1": 0.8, "eval/turns": 6.0, "eval/env_tokens": 144.0, "eval/length": 20.0}]
    assert dict(curve_panels(history))["eval (held-out prompts)"] == ["eval/GuessNumber", "eval/pass@1"]
