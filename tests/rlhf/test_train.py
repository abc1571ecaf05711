"""The command line a user types, as a subprocess: Hydra, a local Ray of its own, outputs on disk."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.integration


def train(*overrides, cwd, **env_vars):
    # never join another cluster; tracebacks as a user gets them
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "HYDRA_FULL_ERROR")}
    env.update(env_vars)
    return subprocess.run([sys.executable, "-m", "rlhf.train", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_smoke_experiment_from_the_command_line(tmp_path):
    out = tmp_path / "smoke"
    result = train("experiment=smoke", f"output_dir={out}", f"hydra.run.dir={out}", cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and all("reward" in line and "time/step" in line for line in lines[:3])
    # evaluated before the first step and after the last (a line of its own), on its 4 held-out questions
    # BLEU defines no passing: no pass@k, and the eval line says so
    assert "eval/bleu" in lines[0] and lines[3].keys() == {"step", "eval/bleu", "eval/length"}
    assert len((out / "eval_samples.jsonl").read_text().splitlines()) == 4
    assert (out / "final" / "config.json").exists() and (out / "final" / "tokenizer_config.json").exists()
    assert (out / "reward_curve.png").exists()
    assert list((out / "wandb").glob("offline-run-*"))
    assert (out / ".hydra" / "config.yaml").exists()
    # the console: the driver's own lines (a start-up and a final summary), none of the actors' (logging.console=quiet)
    console = result.stdout + result.stderr
    assert "roles (colocated): rollout 1 x" in console and "3 steps in" in console
    assert "step 3 eval: bleu " in console and "no pass@k: bleu defines no passing" in console
    assert "finished; the last step:\n  " in console  # a table of numbers
    # library warnings that ask nothing of the user are in the driver's log, not the console (Ray prints its token
    # notice on some runs only: its place is tested in test_console.py)
    assert "Token authentication" not in console and "Setting accelerator to CPU" not in console
    assert "pid=" not in console and "non-default args" not in console and "Loading weights" not in console
    # the engine's output is in its own log (vLLM's INFO line "non-default args" was missing from it in 1 of ~4 runs
    # of this test on a clean clone, for a reason not found yet: asserted only that the log has the engine's output)
    assert "Loading safetensors checkpoint shards" in (out / "logs" / "rollout-0.log").read_text()
    # driver.log is opened only when a library line goes there (Ray's token notice comes on some runs only)
    assert {p.name for p in (out / "logs").iterdir()} - {"driver.log"} == {"rollout-0.log", "reward-0.log",
                                                                           "policy-0.log", "reference-0.log"}
    # a clean stop leaves no traceback in any role's log (the reward actor once printed a SystemExit at shutdown)
    for log in (out / "logs").iterdir():
        assert "Traceback" not in log.read_text() and "SystemExit" not in log.read_text(), log.name


def test_unknown_override_fails_fast_and_names_the_key(tmp_path):
    result = train("experiment=smoke", "train.learning_rate=3", f"hydra.run.dir={tmp_path}", cwd=REPO)
    assert result.returncode != 0 and "learning_rate" in result.stderr


@pytest.mark.parametrize("override, message", [
    ("data.path=/no/such/rows.jsonl", "Error: FileNotFoundError: data.path='/no/such/rows.jsonl' does not exist"),
    ("data.bad_rows=sometimes", "Error: ValueError: data.bad_rows='sometimes' is not valid"),
])
def test_a_user_error_is_one_message_and_the_traceback_needs_hydra_full_error(tmp_path, override, message):
    args = ("experiment=smoke", "data=file", override, f"output_dir={tmp_path}", f"hydra.run.dir={tmp_path}")
    if "data.path" not in override:
        args += (f"data.path={tmp_path / 'rows.jsonl'}",)
        (tmp_path / "rows.jsonl").write_text('{"prompt": "hi", "references": ["x"]}\n')
    result = train(*args, cwd=REPO)
    assert result.returncode == 1 and message in result.stderr
    assert "Traceback" not in result.stderr
    if "data.path" not in override:  # once: the same handler for every user error
        return
    full = train(*args, cwd=REPO, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr and message.split(": ", 2)[2] in full.stderr


@pytest.mark.parametrize("factory, message", [
    ("tests_agent_helpers:NeedsArgument", "Error: EnvironmentFailure: env.factory='tests_agent_helpers:NeedsArgument': "
     "calling it with no argument (once per episode, as TRL's environment_factory) raised TypeError: "),
    ("tests_agent_helpers:Missing", "Error: ValueError: 'tests_agent_helpers:Missing' cannot be imported"),
])
def test_an_environment_that_cannot_serve_stops_the_run_in_one_line_before_any_actor(tmp_path, factory, message):
    result = train("experiment=smoke", f"env.factory={factory}", f"output_dir={tmp_path}", f"hydra.run.dir={tmp_path}",
                   cwd=REPO, PYTHONPATH=str(REPO / "tests"))
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "logs").exists()  # no actor was started


@pytest.mark.extended  # what the submitted sweep (tests/cluster/test_submit.py) checks, but side by side
def test_a_parallel_sweep_gives_every_member_its_own_folder_and_wandb_run(tmp_path):
    # joblib runs the two members side by side, each with a Ray instance of its own
    result = train("-m", "hydra/launcher=joblib", "experiment=smoke", "steps=1", "train.lr=1e-4,1e-3",
                   f"hydra.sweep.dir={tmp_path}", "save_final=false", cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    members = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [m.name.split("-")[0] for m in members] == ["0", "1"]
    assert all("train.lr=" in m.name for m in members)
    for member in members:
        lines = [json.loads(line) for line in (member / "metrics.jsonl").read_text().splitlines()]
        assert [line["step"] for line in lines] == [0, 1] and "reward" not in lines[1]  # a step, the final eval
        assert len(list((member / "wandb").glob("offline-run-*"))) == 1
        assert (member / "checkpoints" / "step-000000").is_dir()  # each member checkpoints into its own folder
    summary = (tmp_path / "summary.md").read_text()
    assert "train.lr=0.0001" in summary and "train.lr=0.001" in summary and "finished" in summary
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 3  # header + one row per member
