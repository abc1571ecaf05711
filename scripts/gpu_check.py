"""The GPU check behind `scripts/gpu_check.sh` (read its header first).

Parts, each PASSED, FAILED or SKIPPED (with the reason), then a summary; the exit code is 1 if any part failed:
1. `hf`: `python -m rlhf.train experiment=smoke placement=single_gpu rollout.engine=hf steps=3`: every GPU role on
   the same CUDA GPU, DeepSpeed over NCCL, the cuda_ipc route chosen, the engine's logprobs close to the learner's.
2. `vllm`: the same with vLLM (its GPU build; SKIPPED when it is not installed), with sleep mode.
3. `object_store`: part 1 with `rollout.weight_sync=object_store` (weights from CUDA tensors through Ray's
   object store, as between nodes).
4. `two_ranks`: always SKIPPED on one GPU (NCCL cannot put two ranks of one group on one GPU).
5. `update`: bf16 policy updates on the default model (SmolLM2-135M), in this process: tokens/s and peak memory.

`RLHF_GPU_CHECK_ON_CPU=1` runs the same parts on a CPU machine with a GPU declared to Ray (the tiny model for part
3), to check this script itself: the roles then compute on the CPU, and the output says it is NOT a GPU check.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ON_CPU = os.environ.get("RLHF_GPU_CHECK_ON_CPU") == "1"
GPU_ROLES = ("rollout", "policy rank 0", "reference")
PHASES = ("generate", "reward", "reference", "train", "weight_sync", "step")


class Skipped(Exception):
    pass


def train_run(engine: str, out: Path, route: str = "auto") -> list[str]:
    overrides = ["experiment=smoke", "placement=single_gpu", f"rollout.engine={engine}", "steps=3",
                 f"rollout.weight_sync={route}",
                 f"output_dir={out}", f"hydra.run.dir={out}", "logging.wandb_mode=disabled",
                 "logging.progress_bar=false", "save_final=false", "checkpoint.every=0"]
    if ON_CPU:
        overrides.append("ray.num_gpus=1")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray instance of its own
    result = subprocess.run([sys.executable, "-m", "rlhf.train", *overrides], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=360)
    log = result.stdout + result.stderr
    (out / "train.log").write_text(log)
    if result.returncode:
        tail = "\n".join(log.strip().splitlines()[-25:])
        raise AssertionError(f"the run failed (exit {result.returncode}); full log in {out / 'train.log'}:\n{tail}")

    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reports = {r["role"]: r for r in json.loads((out / "preflight.json").read_text())}
    chosen = re.search(r"weight sync: (\w+)", log)
    lines = [f"steps {len(history)}, weight sync route: {chosen.group(1) if chosen else '?'}, DeepSpeed backend: "
             f"{reports['policy rank 0'].get('dist_backend')}"]
    lines.append("seconds per step (mean of steps 1-2): " + ", ".join(
        f"{p} {sum(h.get(f'time/{p}', 0.0) for h in history[1:]) / max(1, len(history) - 1):.2f}" for p in PHASES))
    for role, r in reports.items():
        gpu = (f"GPU need {r['gpu_need_gib']:.2f} GiB (allocator peak {r['gpu_allocated_peak_gib']:.2f}, device used "
               f"{r['gpu_device_used_gib']:.2f} of {r['gpu_total_gib']:.0f})" if "gpu_need_gib" in r else "no GPU")
        lines.append(f"  {role:16s} device {r['device']:7s} GPU ids {r['gpu_ids']} share {r['num_gpus']:g}: {gpu}, "
                     f"host peak {r['peak_gib']:.2f} GiB")
    gap = max(h["logprob_gap"] for h in history)
    lines.append(f"largest engine/learner logprob gap: {gap:.2e}")

    expected_device, expected_route, expected_backend = ("cpu", "shm", "gloo") if ON_CPU else ("cuda:0", "cuda_ipc", "nccl")
    expected_route = expected_route if route == "auto" else route
    problems = [f"{role} computes on {reports[role]['device']}, not {expected_device}"
                for role in GPU_ROLES if reports[role]["device"] != expected_device]
    uuids = {reports[role].get("gpu_uuid") for role in GPU_ROLES}
    if not ON_CPU and len(uuids) != 1:
        problems.append(f"the roles are on different GPUs: {uuids}")
    if len(history) != 3:
        problems.append(f"{len(history)} steps logged, not 3")
    if not chosen or chosen.group(1) != expected_route:
        problems.append(f"weight sync route {chosen.group(1) if chosen else 'not logged'}, not {expected_route}")
    if reports["policy rank 0"].get("dist_backend") != expected_backend:
        problems.append(f"DeepSpeed backend {reports['policy rank 0'].get('dist_backend')}, not {expected_backend}")
    if gap > (1e-4 if ON_CPU else 0.1):  # bf16 engine and learner differ by ~1e-2; a stale engine by far more
        problems.append(f"the engine's logprobs are {gap:.3f} from the learner's: the weights did not arrive")
    if problems:
        raise AssertionError("; ".join(problems) + "\n" + "\n".join(lines))
    return lines


def vllm_run(out: Path) -> list[str]:
    try:
        from vllm.platforms import current_platform
    except ImportError as err:
        raise Skipped(f"vLLM is not installed ({err}); RLHF_EXTRAS=\"gpu test\" bash scripts/install.sh installs it")
    if not ON_CPU and not current_platform.is_cuda():
        raise Skipped(f"the installed vLLM is not a CUDA build (platform {current_platform.device_name!r})")
    return train_run("vllm", out)


def two_ranks() -> list[str]:
    raise Skipped("two learner ranks need two GPUs: NCCL cannot put two ranks of one group on the same GPU")


def policy_update() -> list[str]:
    import torch

    sys.path.insert(0, str(REPO))
    from rlhf.config import compose_config, load_config
    from rlhf.experience import Experience
    from rlhf.models import resolve_model_path
    from rlhf.training.policy import PolicyLearner

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"})
    groups, group_size, prompt_len, completion_len = 2, 4, 128, 128
    batch = groups * group_size
    cfg = load_config(compose_config("output_dir=/tmp/unused", "algo.kl.beta=0", f"train.micro_batch_size={batch}",
                                     f"rollout.max_new_tokens={completion_len}"))
    model = resolve_model_path("tiny" if ON_CPU else "smollm2")
    learner = PolicyLearner(model, cfg.train, cfg.algo, batch, completion_len, 1.0, seed=0)
    vocab = learner.engine.module.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (groups, prompt_len), generator=g).repeat_interleave(group_size, 0)
    experience = Experience(prompts, torch.ones_like(prompts), torch.randint(3, vocab, (batch, completion_len), generator=g),
                            torch.ones(batch, completion_len), torch.zeros(batch, completion_len),
                            torch.zeros(batch, dtype=torch.bool))
    experience.advantages = torch.randn(batch, 1, generator=g).expand(batch, completion_len).contiguous()
    sync = torch.cuda.synchronize if learner.device.type == "cuda" else (lambda: None)
    learner.train_step(experience)  # warm-up: kernels, allocator
    sync()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        learner.train_step(experience)
        sync()
        times.append(time.perf_counter() - start)
    step = sorted(times)[1]
    tokens = batch * (prompt_len + completion_len)
    peak = torch.cuda.max_memory_allocated() / 1024**3 if learner.device.type == "cuda" else float("nan")
    bf16 = learner.engine.bfloat16_enabled()
    line = (f"{'SmolLM2-135M' if not ON_CPU else 'tiny model'} on {learner.device}, bf16 {bf16}: {batch} sequences x "
            f"{prompt_len}+{completion_len} tokens, {step:.3f} s per update (median of 3), {tokens / step:,.0f} tokens/s, "
            f"{batch * completion_len / step:,.0f} completion tokens/s, GPU allocator peak {peak:.2f} GiB")
    if not ON_CPU and not (learner.device.type == "cuda" and bf16):
        raise AssertionError(f"the update did not run in bf16 on the GPU: {line}")
    return [line]


def main() -> int:
    import torch

    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, devices: "
          f"{[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or 'none'}")
    if ON_CPU:
        print("RLHF_GPU_CHECK_ON_CPU=1: the parts run on the CPU with a GPU declared to Ray. THIS IS NOT A GPU CHECK.")
    elif not torch.cuda.is_available():
        print("FAILED: torch sees no CUDA device. Install the GPU stack (RLHF_EXTRAS=\"gpu test\" bash "
              "scripts/install.sh) on a machine with an NVIDIA GPU.")
        return 1
    out = Path(os.environ.get("RLHF_GPU_CHECK_DIR", f"/tmp/rlhf-gpu-check-{os.getpid()}"))
    parts = {"hf": lambda: train_run("hf", out / "hf"), "vllm": lambda: vllm_run(out / "vllm"),
             "object_store": lambda: train_run("hf", out / "object_store", route="object_store"),
             "two_ranks": two_ranks, "update": policy_update}
    results = {}
    for name, part in parts.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        print(f"\n== {name}", flush=True)
        start = time.perf_counter()
        try:
            lines, status = part(), "PASSED"
        except Skipped as why:
            lines, status = [str(why)], "SKIPPED"
        except Exception as err:  # noqa: BLE001 - every failure is reported, then the next part runs
            lines, status = [f"{type(err).__name__}: {err}"], "FAILED"
        results[name] = (status, time.perf_counter() - start)
        print("\n".join(lines))
        print(f"{status} ({results[name][1]:.0f} s)", flush=True)
    print("\nsummary: " + ", ".join(f"{name} {status} ({seconds:.0f} s)" for name, (status, seconds) in results.items()))
    print(f"outputs in {out}")
    return int(any(status == "FAILED" for status, _ in results.values()))


if __name__ == "__main__":
    sys.exit(main())
