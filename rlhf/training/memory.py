"""Memory pre-flight: each role runs its heaviest work once at the longest configured lengths and reports
its peak resident memory (and on a GPU its peak GPU memory), so a run that cannot fit a node or a GPU fails before
its first step, with the numbers.

Host peaks are process-wide high-water marks (ru_maxrss); GPU peaks are the torch allocator's (reserved) and, for
vLLM, the share of the GPU it takes up front. Where the pre-flight cannot touch the real state (a learner's
optimizer before its first step, gradients of every weight) the missing bytes are added from the parameter count.
"""

import resource
from pathlib import Path

import psutil
import ray
import torch

from rlhf.devices import GIB, gpu_memory, placement_info

DTYPE_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


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
           "node_gib": node_memory_gib(), **placement_info(device), **gpu_memory(device)}
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


def learner_preflight(engine, forward, rows: int, prompt_len: int, completion_len: int, role: str) -> dict:
    """One micro-batch forward and backward at the longest lengths, before the first step. The backward is
    taken with respect to the first weight only (nothing is accumulated, the optimizer is untouched); every
    weight's gradient and the optimizer's state (AdamW's two fp32 moments, plus fp32 master weights under bf16)
    are added from the parameter count (not divided among ZeRO ranks: an upper bound), on the GPU or, when
    DeepSpeed offloads the optimizer (`train.offload_optimizer`), the optimizer's part in host memory."""
    module = engine.module
    params = [p for p in module.parameters() if p.requires_grad]
    device = params[0].device
    ids, mask = dummy_batch(module.config.vocab_size, rows, prompt_len, completion_len, device)
    module.train()
    # the bare module: DeepSpeed's engine refuses a backward that does not go through engine.backward
    out = forward(module, ids, mask, completion_len)
    torch.autograd.grad(out.float().mean(), params[:1])
    offload_optimizer = engine.zero_cpu_offload()
    numel = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    gradients = numel * DTYPE_BYTES.get(params[0].dtype, 4)
    optimizer = numel * 4 * (2 + (params[0].dtype != torch.float32))
    on_device = gradients + (0 if offload_optimizer else optimizer)
    on_host = gradients + optimizer if device.type == "cpu" else (optimizer if offload_optimizer else 0)
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
