#!/usr/bin/env bash
# Does the GPU path work on this machine? Run on a GPU machine after `RLHF_EXTRAS="gpu test" bash scripts/install.sh`,
# or, on a bare GPU image without Ray/DeepSpeed/Hydra and no network, with the wheels of scripts/gpu_wheels.sh (its
# header says what to carry and the one install command). Parts (scripts/gpu_check.py says each in full):
#   cpu_roles     the default placement (no role holds a GPU share) on a GPU host: every role on the CPU, none sees
#                 a GPU, DeepSpeed over gloo
#   hf            3 GRPO steps on the tiny model, placement=single_gpu, HF engine: every role on the one GPU, DeepSpeed
#                 over NCCL, the CUDA-IPC route
#   vllm          the same with vLLM's GPU build and sleep mode (SKIPPED without it: it pins torch 2.14)
#   object_store  part hf with weights through Ray's object store from CUDA tensors
#   two_ranks     SKIPPED on one GPU (NCCL cannot put two ranks of one group on one GPU)
#   update        bf16 policy updates at SmolLM2-135M's size: tokens/s and peak GPU memory
# Prints each part's phase times and each role's device, GPU ids, CUDA_VISIBLE_DEVICES and GPU memory; a part that
# cannot run here is SKIPPED with the reason, never passed; exits non-zero if any part fails. A few minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
exec python scripts/gpu_check.py "$@"
