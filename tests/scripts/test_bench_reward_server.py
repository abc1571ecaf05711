"""The reward server under load on localhost: 16 concurrent clients x 50 requests of 32 completions (BLEU)."""

import subprocess
import sys

from conftest import REPO


def test_no_request_fails_under_sixteen_concurrent_clients():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_reward_server.py"), "--clients", "16",
                             "--requests", "50", "--batch", "32"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "requests: 800, failed: 0," in result.stdout, result.stdout + result.stderr[-2000:]
