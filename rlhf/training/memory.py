"""Memory pre-flight: each role runs its heaviest work once at the longest configured lengths and reports
its peak resident memory (and on a GPU its peak GPU memory), so a run that cannot fit a node or a GPU fails before
its first step, with the numbers.

Host peaks are process-wide high-water marks (ru_maxrss); GPU peaks are the torch allocator's (reserved) and, for
vLLM, the share of the GPU it takes up front. Where the pre-flight cannot touch the real state (a learner's
optimizer before its first step, gradients of every weight) the missing bytes are added from the parameter count.
"""

import resource
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import ray
import torch

from rlhf.devices import GIB, gpu_memory, placement_info

DTYPE_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}
# When this process built its model or engine (wall-clock seconds, [began, ended]): every actor holds one role, and the
# pre-flight report shows the start-up order (engines sharing a GPU must start one after another)
BUILD_WINDOW: list[float] = []


@contextmanager
def building():
    began = time.time()
    yield
    BUILD_WINDOW[:] = [began, time.time()]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux reports KiB


def node_memory_gib() -> float:
    """What this node can give its processes: physical memory, or the cgroup's limit when lower."""
    total = psutil.virtual_memory().total
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total / GIB


def device_info(device: torch.device) -> dict:
    """Where an actor computes and what Ray gave it (the weight-sync route picks itself from these)."""
    gpu = gpu_memory(device)
    return {**placement_info(device), "gpu_uuid": gpu.get("gpu_uuid"), "node": ray.get_runtime_context().get_node_id()}


def report(role: str, peak_gib: float, device: torch.device | None = None, gpu_missing_gib: float = 0.0,
           gpu_planned_fraction: float | None = None) -> dict:
    """One role's pre-flight line. On a GPU `gpu_need_gib` is what the check adds up per GPU: the allocator's
    reserved peak plus what the pre-flight could not touch, or the share vLLM takes up front when larger."""
    device = device or torch.device("cpu")
    row = {"role": role, "node": ray.get_runtime_context().get_node_id(), "peak_gib": peak_gib,
           "node_gib": node_memory_gib(), **placement_info(device), **gpu_memory(device),
           "built": list(BUILD_WINDOW) or None}
    if torch.distributed.is_initialized():  # a DeepSpeed rank: gloo on the CPU, NCCL on GPUs
        row["dist_backend"] = torch.distributed.get_backend()
    if "gpu_uuid" in row:
        need = row["gpu_reserved_peak_gib"] + gpu_missing_gib
        if gpu_planned_fraction is not None:
            need = max(need, gpu_planned_fraction * row["gpu_total_gib"])
        row["gpu_need_gib"] = need
    return row


def dummy_batch(vocab_size: int, rows: int, prompt_len: int, completion_len: int, device=None):
    ids = torch.randint(0, vocab_size, (rows, prompt_len + completion_len), device=device)
    return ids, torch.ones_like(ids)


def model_state_bytes(numel: int, zero_stage: int, world: int, bf16: bool,
                      offload_optimizer: bool = False) -> dict[str, float]:
    """What one rank of a ZeRO group of `world` ranks holds for `numel` trained parameters under AdamW, in bytes, as
    DeepSpeed partitions it: stage 1 splits the optimizer state among the ranks, 2 also the gradients, 3 also the
    weights. Returns {"weights", "gradients", "optimizer"} (on the rank's device) and "offloaded" (host memory).

    bf16 (mixed precision), DeepSpeed's own accounting: 2 bytes of 16-bit weights, 2 of 16-bit gradients, then 16
    of fp32 state (4 master weights, 4 fp32 gradients, 8 for the two Adam moments). Under ZeRO-3 the 16-bit gradients
    are reduced straight into the fp32 partition (DeepSpeed counts 2 + 16 bytes per parameter there).
    fp32: 4 bytes of weights, 4 of gradients, 8 of moments. With `offload_optimizer` the optimizer state and the
    gradient partition live in host memory (DeepSpeed counts only the weights on the device).
    Gathered layers and activations are not here: the pre-flight measures them."""
    low = 2 if bf16 else 4  # the weights and gradients the model computes with
    weights, gradients, optimizer = low * numel, low * numel, (16 if bf16 else 8) * numel
    if bf16 and zero_stage == 3:
        gradients = 0
    if zero_stage >= 1:
        optimizer /= world
    if zero_stage >= 2:
        gradients /= world
    if zero_stage >= 3:
        weights /= world
    if offload_optimizer and zero_stage >= 1:
        # the gradients reach the host's fp32 partition bucket by bucket (bf16's are among its 16 bytes already)
        fp32_gradients = 0.0 if bf16 else 4 * numel / world
        return {"weights": weights, "gradients": 0.0, "optimizer": 0.0, "offloaded": optimizer + fp32_gradients}
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer, "offloaded": 0.0}


def learner_preflight(engine, forward, rows: int, prompt_len: int, completion_len: int, role: str) -> dict:
    """One micro-batch forward and backward at the longest lengths, before the first step. The backward is
    taken with respect to the first weight only (nothing is accumulated, the optimizer is untouched); this rank's
    share of every weight's gradient and of the optimizer's state (`model_state_bytes`, divided among the ZeRO ranks
    as DeepSpeed divides them) is added from the parameter count, on the GPU or, when DeepSpeed offloads the
    optimizer (`train.offload_optimizer`), in host memory. The weights themselves are measured."""
    module = engine.module
    params = [p for p in module.parameters() if p.requires_grad]
    device = params[0].device
    ids, mask = dummy_batch(module.config.vocab_size, rows, prompt_len, completion_len, device)
    module.train()
    # the bare module: DeepSpeed's engine refuses a backward that does not go through engine.backward
    out = forward(module, ids, mask, completion_len)
    torch.autograd.grad(out.float().mean(), params[:1])
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    numel = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    states = model_state_bytes(numel, engine.zero_optimization_stage(), world, params[0].dtype != torch.float32,
                               engine.zero_cpu_offload())
    on_device = states["gradients"] + states["optimizer"]
    on_host = states["offloaded"] + (on_device if device.type == "cpu" else 0)
    gpu_missing = on_device / GIB if device.type == "cuda" else 0.0
    return report(role, peak_rss_gib() + on_host / GIB, device, gpu_missing_gib=gpu_missing)


def check_fit(reports: list[dict], fraction: float, node_gib_override: float | None = None) -> list[str]:
    """Sum the peaks of the roles sharing each node, and the GPU needs of the roles sharing each GPU; return one
    error line per node or GPU that would not fit."""
    problems, by_node, by_gpu = [], {}, {}
    for r in reports:
        by_node.setdefault(r["node"], []).append(r)
        if r.get("gpu_uuid"):
            by_gpu.setdefault(r["gpu_uuid"], []).append(r)
    for node, rows in by_node.items():
        total = sum(r["peak_gib"] for r in rows)
        capacity = (node_gib_override or rows[0]["node_gib"]) * fraction
        if total > capacity:
            parts = ", ".join(f"{r['role']} {r['peak_gib']:.2f}" for r in sorted(rows, key=lambda r: -r["peak_gib"]))
            problems.append(f"node {node[:8]}: the roles' peaks add up to {total:.2f} GiB ({parts}) but "
                            f"{capacity:.2f} GiB is usable ({fraction:.0%} of {capacity / fraction:.2f} GiB)")
    for uuid, rows in by_gpu.items():
        total, gpu_total = sum(r["gpu_need_gib"] for r in rows), rows[0]["gpu_total_gib"]
        if total > gpu_total * fraction:
            parts = ", ".join(f"{r['role']} {r['gpu_need_gib']:.2f} GiB ({r['gpu_need_gib'] / gpu_total:.0%})"
                              for r in sorted(rows, key=lambda r: -r["gpu_need_gib"]))
            problems.append(f"GPU {uuid} ({rows[0]['gpu_name']}): the roles need {total:.2f} GiB ({parts}) but "
                            f"{gpu_total * fraction:.2f} GiB is usable ({fraction:.0%} of {gpu_total:.2f} GiB)")
    return problems
