#!/usr/bin/env bash
# The tests the default suite leaves out (`pytest -m extended`), about 12 minutes on 2 cores:
# - the learning runs: each algorithm, PPO on multi-turn episodes, DAPO and async GRPO over 32 steps on the tiny
#   model's task (its reward must rise); the default suite runs each for a few steps (the mechanics);
# - end-to-end runs whose every mechanism the default suite shows in another test: Hydra's parallel (joblib) sweep,
#   whose members' own folders, wandb runs and summary the submitted sweep (tests/cluster/test_submit.py) checks too.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q -m extended "$@"
