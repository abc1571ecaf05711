"""Which device a role computes on, in what precision, and how much GPU memory it holds.

A Ray actor that asked for a GPU share (`*.num_gpus > 0`) sees the GPU Ray gave it as `cuda:0` (Ray sets
CUDA_VISIBLE_DEVICES to its ids). It computes there when torch can use CUDA; otherwise (a CPU build of torch,
or GPUs declared to Ray on a machine that has none) it falls back to the CPU and says so once.
"""

import logging
import os

import torch

log = logging.getLogger(__name__)
GIB = 1024**3


def gpu_ids() -> list[str]:
    """The GPU ids Ray assigned to this process (empty outside Ray or without a GPU share)."""
    import ray

    return [str(i) for i in ray.get_gpu_ids()] if ray.is_initialized() else []


def in_ray_worker() -> bool:
    import ray

    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def resolve_device(role: str) -> torch.device:
    """In a Ray actor: CUDA when Ray gave it a GPU share and torch can use it. Outside Ray (a script, a benchmark):
    CUDA when torch sees a GPU."""
    if not in_ray_worker():
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    ids = gpu_ids()
    if not ids:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        log.warning("%s holds GPU %s from Ray but torch sees no CUDA device: computing on the CPU", role, ids)
        return torch.device("cpu")
    torch.cuda.set_device(0)  # the first GPU Ray gave this actor
    return torch.device("cuda", 0)


def resolve_dtype(setting: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on a GPU, float32 on the CPU (a run resolves a CPU engine's `auto` before, to the learner's
    precision: rlhf/precision.py; this is the fallback of scripts that build an engine alone)."""
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, setting)


def resolve_bf16(setting: bool | None, device: torch.device) -> bool:
    """A learner's `bf16`: null means bf16 on a GPU, fp32 on the CPU (a run resolves a CPU learner's null before, by
    measurement: rlhf/precision.py)."""
    return device.type == "cuda" if setting is None else setting


def gpu_memory(device: torch.device) -> dict:
    """This process's GPU memory on `device` (empty on the CPU): the allocator's peak, and what the device itself
    reports as used (every process on it: the number an OOM is decided by)."""
    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {"gpu_uuid": str(torch.cuda.get_device_properties(device).uuid), "gpu_name": torch.cuda.get_device_name(device),
            "gpu_total_gib": total / GIB, "gpu_device_used_gib": (total - free) / GIB,
            "gpu_allocated_peak_gib": torch.cuda.max_memory_allocated(device) / GIB,
            "gpu_reserved_peak_gib": torch.cuda.max_memory_reserved(device) / GIB}


def placement_info(device: torch.device) -> dict:
    """What Ray gave this actor and where it computes: goes into the pre-flight report."""
    import ray

    resources = ray.get_runtime_context().get_assigned_resources() if in_ray_worker() else {}  # a driver holds none
    return {"gpu_ids": gpu_ids(), "num_gpus": resources.get("GPU", 0.0), "device": str(device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
