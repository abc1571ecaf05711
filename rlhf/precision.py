"""The precision of the roles that compute on the CPU, chosen by measurement (`train.bf16: null`, `critic.bf16: null`,
`rollout.dtype: auto`).

bf16 on a CPU is a matter of the chip: on cores with avx512_bf16 / AMX the learner's forward and backward ran 1.7-1.9x
faster in bf16 than in fp32, on another CPU of this project's history 10x slower. So the choice is a probe: a matmul
of the model's own shapes (hidden x intermediate, forward and its backward's two products), timed in fp32 and in bf16
with the role's threads, a second or two, cached under the project's cache per CPU model, torch version, shape and
threads. bf16 is chosen where it is at least `MARGIN` faster. On a GPU nothing is probed: bf16, as before.

What each choice keeps: `train.bf16=true` is DeepSpeed's bf16 mode: the model computes in bf16 (its gradients too,
summed over micro-batches in bf16), DeepSpeed keeps fp32 master weights and fp32 Adam moments (ZeRO 1-2 partition
them), the masters starting off the bf16 grid (`start_masters_off_grid` in rlhf/training/deepspeed_engine.py says
why); false is fp32 throughout. The engine (`rollout.dtype`) follows the learner's choice on the CPU, so both sample
and score in one precision (their logprob gap, `logprob_gap` and `mismatch_kl`, is what the rollout corrections see).
"""

import json
import logging
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rlhf.models.folders import write_text_atomically

log = logging.getLogger(__name__)
MARGIN = 1.1  # bf16 must be this much faster: a tie keeps fp32, whose logprobs match the engine's exactly
TOKENS = 512  # rows of the probe's activations: a micro-batch's worth
MIN_HIDDEN = 256  # a smaller model (a test's tiny one) stays fp32 unprobed: its matmuls are too small to gain or time


@dataclass
class Probe:
    fp32_s: float
    bf16_s: float

    @property
    def bf16(self) -> bool:
        return self.fp32_s >= MARGIN * self.bf16_s

    def describe(self) -> str:
        return (f"{'bf16' if self.bf16 else 'fp32'} on the CPU: the probe's matmuls took {self.fp32_s * 1e3:.1f} ms in "
                f"fp32, {self.bf16_s * 1e3:.1f} ms in bf16 ({self.fp32_s / self.bf16_s:.2f}x; bf16 from {MARGIN:g}x)")


SMALL = "fp32 on the CPU: the model is too small (hidden size under {}) for bf16 to gain"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_matmuls(hidden: int, intermediate: int, threads: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """The best of `repeats` of a layer's forward product and its backward's two, in `dtype`."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(TOKENS, hidden, generator=generator).to(dtype)
        w = torch.randn(hidden, intermediate, generator=generator).to(dtype)
        g = torch.randn(TOKENS, intermediate, generator=generator).to(dtype)
        best = float("inf")
        for _ in range(repeats + 1):  # the first is a warm-up; the best of the rest (a busy machine only slows)
            started = time.perf_counter()
            x @ w, g @ w.T, x.T @ g
            best = min(best, time.perf_counter() - started)
        return best
    finally:
        torch.set_num_threads(before)


def probe(hidden: int, intermediate: int, threads: int, cache: Path) -> Probe:
    """The cached probe of this CPU, torch and shape, measured (and cached) on a first call."""
    key = f"{cpu_model()} | torch {torch.__version__} | {hidden}x{intermediate} | {threads} threads"
    table = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in table:
        table[key] = {"fp32_s": time_matmuls(hidden, intermediate, threads, torch.float32),
                      "bf16_s": time_matmuls(hidden, intermediate, threads, torch.bfloat16)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(cache, json.dumps(table, indent=1))
    return Probe(**table[key])


def resolve_precision(cfg, model_path: str, cache: Path):
    """`cfg` with the CPU roles' open choices made: `train.bf16` / `critic.bf16` null and `rollout.dtype: auto` on
    roles without a GPU become the probe's choice (the reference follows `train.bf16`). Returns (cfg, what was
    chosen and why, or None when nothing was open)."""
    from transformers import AutoConfig

    # a critic that is not built has nothing to measure for
    learners = ("train", "critic") if cfg.algo.critic.enabled else ("train",)
    open_learners = [role for role in learners if getattr(cfg, role).bf16 is None and not getattr(cfg, role).num_gpus]
    open_engine = cfg.rollout.dtype == "auto" and not cfg.rollout.num_gpus
    if not open_learners and not open_engine:
        return cfg, None
    if not open_learners and cfg.train.bf16 is not None:  # the engine follows the learner's set precision: no probe
        dtype = "bfloat16" if cfg.train.bf16 else "float32"
        return (replace(cfg, rollout=replace(cfg.rollout, dtype=dtype)),
                f"{'bf16' if cfg.train.bf16 else 'fp32'} as set; the engine follows the learner")
    model = AutoConfig.from_pretrained(model_path)
    hidden = model.hidden_size
    if hidden < MIN_HIDDEN:
        chosen, why = False, SMALL.format(MIN_HIDDEN)
    else:
        found = probe(hidden, getattr(model, "intermediate_size", None) or 4 * hidden, cfg.train.threads, cache)
        chosen, why = found.bf16, found.describe()
    changes = {role: replace(getattr(cfg, role), bf16=chosen) for role in open_learners}
    if open_engine:
        # the engine follows the learner's precision where the learner's is set (so both score alike)
        learner_bf16 = changes["train"].bf16 if "train" in changes else cfg.train.bf16
        bf16 = chosen if learner_bf16 is None else learner_bf16
        changes["rollout"] = replace(cfg.rollout, dtype="bfloat16" if bf16 else "float32")
    return replace(cfg, **changes), why
