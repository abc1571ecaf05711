"""`cluster/submit.sh` against a Ray head of the test's own (own ports, own temp dir, stopped by PID)."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from actors.learner_group import free_port
from conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")  # one head for the module's jobs
def ray_head():
    dashboard = free_port()
    temp_dir = f"/tmp/rlhf-test-head-{os.getpid()}"  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={free_port()}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         # every agent on a port of its own: another Ray instance on this host holds the default ones
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # up, and asking for the authentication token
            break
        except OSError:
            time.sleep(1)
    else:
        os.killpg(head.pid, signal.SIGTERM)
        pytest.fail("the Ray head's job server did not come up")
    # The job agent registers a little after the dashboard answers ("No available agent to submit job").
    probe_env = {**env, "RAY_AUTH_MODE": "token"}
    while time.time() < deadline:
        probe = subprocess.run(["ray", "job", "submit", "--address", address, "--", "true"], env=probe_env,
                               capture_output=True, text=True, timeout=120)
        if probe.returncode == 0:
            break
        time.sleep(2)
    yield address
    os.killpg(head.pid, signal.SIGTERM)  # only the processes this test started
    try:
        head.wait(timeout=3)
    except subprocess.TimeoutExpired:  # Ray's orderly stop took 30 s and more here: the group goes at once
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_submit_refuses_a_relative_output_root():
    env = {**os.environ, "OUTPUT_ROOT": "runs"}
    result = subprocess.run(["bash", "cluster/submit.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "absolute" in result.stderr


def test_a_sweep_as_one_ray_job(ray_head, tmp_path):
    # what a single submitted run shows too (outputs at the absolute OUTPUT_ROOT, not in the job's copy of the
    # repository; the final weights and their evaluation), here for each member of a sweep
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
           "RAY_ADDRESS": ray_head, "OUTPUT_ROOT": str(tmp_path / "runs")}
    # the HF engine: each member starts ~10 s sooner (vLLM from the command line: tests/rlhf/test_train.py)
    result = subprocess.run(["bash", "cluster/submit.sh", "-m", "experiment=smoke", "steps=1", "train.lr=1e-4,1e-3",
                             "rollout.engine=hf"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (sweep_dir,) = list((tmp_path / "runs").iterdir())
    members = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [m.name.split(",")[-1] for m in members] == ["train.lr=0.0001", "train.lr=0.001"], members
    for member in members:  # each its own metrics, checkpoint and wandb run
        lines = [json.loads(line) for line in (member / "metrics.jsonl").read_text().splitlines()]
        # one step, then the final weights' evaluation as the line of step 1
        assert [line["step"] for line in lines] == [0, 1] and "reward" not in lines[1] and "eval/bleu" in lines[1]
        assert (member / "final" / "config.json").exists()
        assert list((member / "checkpoints").glob("step-*")) and list((member / "wandb").glob("offline-run-*"))
    summary = (sweep_dir / "summary.csv").read_text().splitlines()
    assert len(summary) == 3 and all(",finished," in row for row in summary[1:]), summary
