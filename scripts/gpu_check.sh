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
#   async_partial vLLM, rollout.mode=async, partial rollouts, algo/correction=tis: pushes split over actor calls while
#                 the producer streams (nothing generates on half-loaded weights)
#   multi_turn    vLLM, the guess_number preset (multi-turn episodes) on the tiny model
#   dapo_one_step_off  vLLM, algo=dapo in rollout.mode=one_step_off over the shm route (over CUDA IPC it is refused)
#   shm_sleep     vLLM, rollout.weight_sync=shm with rollout.sleep_mode=true
#   lora          vLLM, train.lora.rank=8: merged LoRA weights pushed to the engine
# The vLLM parts are SKIPPED without vLLM where torch sees no CUDA, FAILED where it sees CUDA and `import vllm` fails.
# Prints each part's phase times and each role's device, GPU ids, CUDA_VISIBLE_DEVICES and GPU memory; a part that
# cannot run here is SKIPPED with the reason, never passed; exits non-zero if any part fails. A few minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
exec python scripts/gpu_check.py "$@"
