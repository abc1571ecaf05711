"""Memory pre-flight: each role runs its heaviest work once at the longest configured lengths and reports
its peak resident memory, so a run that cannot fit a node fails before its first step, with the numbers.

Peaks are process-wide high-water marks (ru_maxrss). Where the pre-flight cannot touch the real state (a
learner's optimizer before its first step, gradients of every weight) the missing bytes are added from
the parameter count.
"""

import resource
from pathlib import Path

import psutil
import ray
import torch

GIB = 1024**3


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


def report(role: str, peak_gib: float) -> dict:
    return {"role": role, "node": ray.get_runtime_context().get_node_id(), "peak_gib": peak_gib,
            "node_gib": node_memory_gib()}


def dummy_batch(vocab_size: int, rows: int, prompt_len: int, completion_len: int):
    ids = torch.randint(0, vocab_size, (rows, prompt_len + completion_len))
    return ids, torch.ones_like(ids)


def learner_preflight(engine, forward, rows: int, prompt_len: int, completion_len: int, role: str) -> dict:
    """One micro-batch forward and backward at the longest lengths, before the first step. The backward is
    taken with respect to the first weight only (nothing is accumulated, the optimizer is untouched); every
    weight's gradient and AdamW's two moments are added from the parameter count (not divided among ZeRO
    ranks: an upper bound)."""
    module = engine.module
    params = [p for p in module.parameters() if p.requires_grad]
    ids, mask = dummy_batch(module.config.vocab_size, rows, prompt_len, completion_len)
    module.train()
    # the bare module: DeepSpeed's engine refuses a backward that does not go through engine.backward
    out = forward(module, ids, mask, completion_len)
    torch.autograd.grad(out.float().mean(), params[:1])
    weight_bytes = sum(getattr(p, "ds_numel", p.numel()) * 4 for p in params)  # fp32 grads and moments
    missing = 3 * weight_bytes
    return report(role, peak_rss_gib() + missing / GIB)


def check_fit(reports: list[dict], fraction: float, node_gib_override: float | None = None) -> list[str]:
    """Sum the peaks of the roles sharing each node; return one error line per node that would not fit."""
    problems, by_node = [], {}
    for r in reports:
        by_node.setdefault(r["node"], []).append(r)
    for node, rows in by_node.items():
        total = sum(r["peak_gib"] for r in rows)
        capacity = (node_gib_override or rows[0]["node_gib"]) * fraction
        if total > capacity:
            parts = ", ".join(f"{r['role']} {r['peak_gib']:.2f}" for r in sorted(rows, key=lambda r: -r["peak_gib"]))
            problems.append(f"node {node[:8]}: the roles' peaks add up to {total:.2f} GiB ({parts}) but "
                            f"{capacity:.2f} GiB is usable ({fraction:.0%} of {capacity / fraction:.2f} GiB)")
    return problems
