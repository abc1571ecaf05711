"""What the console shows of a run, and what it leaves to the logs."""

import os
import subprocess
import sys

from conftest import REPO
from rlhf.console import finished_table


def test_the_finished_line_is_an_aligned_table_of_numbers():
    table = finished_table({"reward": 0.103214, "kl": 0.0012345, "loss": -0.01234, "grad_norm": 12.3456, "lr": 1e-6,
                            "completion_length": 76.25, "reward/bleu": 0.1, "time/step": 3.0})
    assert table.splitlines() == [
        "finished; the last step:",
        "  reward                0.1032   kl                  0.001234   loss                -0.01234",
        "  grad_norm              12.35   lr                     1e-06   completion_length      76.25",
    ]
    assert "'" not in table  # numbers as numbers, not the quoted strings of a dict


# A subprocess: DeepSpeed warns once per process, and the test must see what reaches the real stdout and stderr
LIBRARY_WARNINGS = """
import os, sys
sys.path.insert(0, {repo!r})
from rlhf.console import configure_driver_logging
configure_driver_logging("quiet", {out!r})
from ray._private.authentication import authentication_token_setup
authentication_token_setup._warn_token_auth_enabled()  # what ray.init says when it starts a local instance
from deepspeed.accelerator import get_accelerator
get_accelerator()  # no GPU: DeepSpeed says it falls back to the CPU
import logging
logging.getLogger("ray").warning("Ray's other warnings stay on the console")
"""


def test_ray_token_and_deepspeed_cpu_warnings_go_to_the_driver_log_not_the_console(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}  # set, DeepSpeed would not look (or warn)
    result = subprocess.run([sys.executable, "-c", LIBRARY_WARNINGS.format(repo=str(REPO), out=str(tmp_path))],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    assert "Token authentication" not in console and "Setting accelerator to CPU" not in console, console
    assert "Ray's other warnings stay on the console" in console
    logged = (tmp_path / "logs" / "driver.log").read_text()
    assert "Token authentication is enabled for this Ray cluster" in logged and "Setting accelerator to CPU" in logged
