#!/usr/bin/env bash
# Does the GPU path work on this machine? Run after `RLHF_EXTRAS="gpu test" bash scripts/install.sh` on a fresh GPU
# machine: 3 GRPO steps on the tiny model with placement=single_gpu (HF engine, then vLLM), DeepSpeed over NCCL,
# CUDA-IPC and object-store weight sync, the reference on the GPU, and a bf16 policy-update figure on the default
# model. Prints each part's phase times and each role's GPU memory; exits non-zero if any part fails. A part that
# cannot run here (vLLM's GPU build not installed, say) is reported as SKIPPED, never as passed. A few minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
exec python scripts/gpu_check.py "$@"
