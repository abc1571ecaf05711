"""Stopping a run by signal, as a researcher (Ctrl-C) or a scheduler (SIGTERM) does: it finishes the step in flight,
writes a checkpoint of it, leaves no process and no shared-memory folder, exits 130 / 143, and can be resumed."""

import json
import os
import signal
import time

import psutil
import pytest

from rlhf.checkpoint import find_checkpoint, read_driver_state

from tests_run_helpers import start_run
from tests_ray_helpers import wait_until

pytestmark = pytest.mark.integration
RUN = ["experiment=smoke", "steps=5", "checkpoint.every=100", "save_final=false", "logging.progress_bar=false",
       "rollout.engine=hf", "preflight.enabled=false", "eval.every=0"]


def start(out, *extra):
    return start_run(out, *RUN, *extra, new_session=True)


def running(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def steps(out) -> list[int]:
    metrics = out / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return [json.loads(line)["step"] for line in lines if line.endswith("}")]


def stop_when_logged(process, out, step: int, number: int) -> tuple[int, list[int], str]:
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None and step not in steps(out):
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read()[-3000:]
    family = [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
    if number == signal.SIGINT:  # a terminal's Ctrl-C reaches the whole foreground process group, Ray's too
        os.killpg(process.pid, number)
    else:  # a scheduler's SIGTERM, to the driver
        process.send_signal(number)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, family, stderr


@pytest.mark.parametrize("number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_after_its_step_with_a_checkpoint_and_nothing_left(tmp_path, number, code):
    out = tmp_path / "run"
    returncode, family, stderr = stop_when_logged(start(out), out, 1, number)
    assert returncode == code, stderr[-3000:]
    assert "resume with resume=auto" in stderr and "Traceback" not in stderr
    done = steps(out)
    assert 1 <= done[-1] < 4 and done == list(range(done[-1] + 1))  # stopped early, every step it began logged
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert checkpoints == [f"step-{done[-1]:06d}"]  # checkpoint.every=100: this one is the stop's
    # Ray's processes end on their own after the driver: wait for them (a fixed sleep raced a slow machine)
    wait_until(lambda: not running(family), "the run's processes to end", timeout_s=60)
    assert not list((tmp_path / "sync").glob("*"))  # the weight folder went with the run
    # the stop's checkpoint is whole (its manifest checks out) and resume=auto picks it; it is written by the same
    # save as every checkpoint, whose resume tests/rlhf/test_checkpoint.py checks after a SIGKILL
    newest = find_checkpoint("auto", out / "checkpoints")
    assert newest.name == checkpoints[0] and read_driver_state(newest)["step"] == done[-1]
