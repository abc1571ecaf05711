"""Device and precision resolution (this machine has no CUDA: the GPU branches are checked on a GPU by
scripts/gpu_check.sh)."""

import torch

from rlhf.devices import gpu_memory, resolve_bf16, resolve_device, resolve_dtype


def test_bf16_is_the_gpu_default_and_fp32_the_cpu_default():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_dtype("auto", cpu) == torch.float32 and resolve_dtype("auto", gpu) == torch.bfloat16
    assert resolve_dtype("float32", gpu) == torch.float32 and resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_bf16(None, gpu) and not resolve_bf16(None, cpu)
    assert resolve_bf16(True, cpu) and not resolve_bf16(False, gpu)


def test_outside_ray_without_cuda_everything_computes_on_the_cpu():
    assert resolve_device("policy") == torch.device("cpu")
    assert gpu_memory(torch.device("cpu")) == {}


def test_a_learner_rank_on_the_cpu_uses_gloo_even_where_torch_sees_a_gpu(monkeypatch):
    from rlhf.training.deepspeed_engine import dist_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU host
    assert dist_backend(torch.device("cpu")) == "gloo"
    assert dist_backend(torch.device("cuda", 0)) == "nccl"
