#!/usr/bin/env bash
# The learning runs the default suite leaves out (each algorithm, PPO on multi-turn episodes, DAPO and async GRPO
# over 32 steps on the tiny model's task: its reward must rise), as tests: about 10 minutes on 2 cores.
# The default suite runs each of them for a few steps (the mechanics); this shows that each learns.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q -m learning "$@" tests/rlhf/test_driver.py tests/rlhf/test_asynchronous.py
