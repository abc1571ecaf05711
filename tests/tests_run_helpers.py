"""`python -m rlhf.train` started as a user starts it, in a subprocess of the test's, for tests that stop it from
outside (a signal, SIGKILL)."""

import os
import subprocess
import sys

from conftest import REPO


def start_run(out, *overrides: str, new_session: bool = False) -> subprocess.Popen:
    """A run writing to `out`, on a local Ray of its own (never another cluster's). Its weight-sync folder goes under
    the test's own folder, not /dev/shm: a SIGKILLed run cannot remove it. `new_session`: the run leads a process
    group of its own, which a terminal's Ctrl-C reaches as a whole."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen([sys.executable, "-m", "rlhf.train", *overrides, f"output_dir={out}",
                             f"hydra.run.dir={out}", f"rollout.sync_dir={out.parent / 'sync'}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=new_session)
