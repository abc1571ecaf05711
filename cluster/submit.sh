#!/usr/bin/env bash
# Submit an experiment to a running Ray cluster as a Ray job; logs stream back here.
#   cluster/submit.sh [hydra overrides...]         e.g. cluster/submit.sh experiment=smoke steps=10
# RAY_ADDRESS   the head's job-server address (default http://127.0.0.1:8265)
# OUTPUT_ROOT   an ABSOLUTE folder every node can write (default $HOME/rlhf-runs). The job runs in a copy of
#               this checkout inside Ray's session folder, which disappears with the cluster: relative
#               output paths would be lost.
set -euo pipefail
cd "$(dirname "$0")/.."
address="${RAY_ADDRESS:-http://127.0.0.1:8265}"
output_root="${OUTPUT_ROOT:-$HOME/rlhf-runs}"
case "$output_root" in /*) ;; *) echo "OUTPUT_ROOT must be an absolute path, got '$output_root'" >&2; exit 2 ;; esac
run_dir="$output_root/$(date +%Y%m%d-%H%M%S)"
# Ray 2.60 heads use token authentication; the CLI sends the token only in token mode.
if [ -z "${RAY_AUTH_MODE:-}" ] && { [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -f "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]; }; then
    export RAY_AUTH_MODE=token
fi
runtime_env='{"excludes": [".git", "outputs", "multirun", "wandb"], "env_vars": {"WANDB_MODE": "offline"}}'
echo "outputs: $run_dir"
# A sweep (-m) puts each member in its own folder under the sweep folder; a single run writes to run_dir.
# Hydra's argument parser wants -m before every override.
mode=() placement_args=("output_dir=$run_dir" "hydra.run.dir=$run_dir") overrides=()
for arg in "$@"; do
    if [ "$arg" = "-m" ] || [ "$arg" = "--multirun" ]; then mode=(-m) placement_args=("hydra.sweep.dir=$run_dir")
    else overrides+=("$arg"); fi
done
exec ray job submit --address "$address" --working-dir . --runtime-env-json "$runtime_env" -- \
    python -m rlhf.train "${mode[@]}" "${placement_args[@]}" "${overrides[@]}"
