"""Tokens per second of our SFT (algo=sft) and of TRL 1.16's SFTTrainer on the same demonstrations, model, batch and
threads, back to back.

    python scripts/bench_sft.py                      # 2 warm-up + 6 timed steps each, 1 and 2 threads
    python scripts/bench_sft.py --threads 2 --steps 4 --warmup 1

Work: SmolLM2-135M-Instruct (fp32), gsm_symbolic questions (seed 0) with their worked solutions as completions, in
TRL's conversational prompt + completion format (the chat template on both sides, the completion the only target),
8 demonstrations per optimizer step, lr 1e-5 constant. TRL runs in its own virtualenv (as scripts/bench_vs_trl.py:
~/.cache/rlhf/trl-venv) with gradient checkpointing off (ours has none on) and no packing; ours as `python -m
rlhf.train algo=sft` with `train.max_tokens_per_micro_batch` (length-sorted micro-batches) and `--ours` overrides.
Tokens are the sequences' real tokens (padding excluded: TRL's `num_tokens`, our `sft/input_tokens`); tokens/s is
their sum over the timed steps' summed wall time (TRL: its optimizer step; ours: the step as the driver times it,
and the learner's own time beside it). Writes outputs/bench_sft/<time>.json.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_vs_trl import ensure_trl_venv, run_tree  # noqa: E402  (TRL's virtualenv, memory of a process tree)


def write_rows(path: Path, count: int) -> None:
    from rlhf.data.sources import reasoning_gym_rows

    rows = reasoning_gym_rows("gsm_symbolic", count, 0)
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": r["question"]}],
                                        "completion": [{"role": "assistant", "content": r["answer_cot"]}]}) + "\n"
                            for r in rows))


def rate(tokens: list[float], seconds: list[float], args) -> dict:
    timed = slice(args.warmup, args.warmup + args.steps)
    total, wall = sum(tokens[timed]), sum(seconds[timed])
    return {"tokens_per_second": total / wall, "seconds_per_step": wall / len(seconds[timed]),
            "tokens_per_step": total / len(tokens[timed])}


def run_trl(python, rows: Path, model: str, args, threads: int, work: Path) -> dict:
    job = {"model": model, "rows": str(rows), "batch_size": args.batch, "steps": args.warmup + args.steps,
           "lr": 1e-5, "threads": threads, "max_length": 1024, "gradient_checkpointing": False,
           "output_dir": str(work / "trl-out"), "result": str(work / "trl-result.json")}
    (work / "trl-job.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    memory = run_tree([str(python), str(REPO / "scripts" / "trl_sft_worker.py"), str(work / "trl-job.json")], env,
                      work / "trl.log")
    result = json.loads((work / "trl-result.json").read_text())
    return {**rate(result["step_tokens"], result["step_seconds"], args), **memory}


def run_ours(rows: Path, args, threads: int, work: Path) -> dict:
    out = work / "ours"
    overrides = ["algo=sft", "data=file", f"data.path={rows}", "data.max_prompt_tokens=1024",
                 "rollout.max_new_tokens=1024", f"sft.batch_size={args.batch}", "train.lr=1e-5", "train.bf16=false",
                 f"steps={args.warmup + args.steps}", f"train.threads={threads}", "eval.every=0", "checkpoint.every=0",
                 "save_final=false", "logging.wandb_mode=disabled", "logging.plot=false", "logging.progress_bar=false",
                 f"output_dir={out}", f"hydra.run.dir={out}", *args.ours]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    memory = run_tree([sys.executable, "-m", "rlhf.train", *overrides], env, work / "ours.log")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tokens = [h["sft/input_tokens"] for h in history]
    result = {**rate(tokens, [h["time/step"] for h in history], args), **memory}
    result["learner_tokens_per_second"] = rate(tokens, [h["time/learner"] for h in history], args)["tokens_per_second"]
    result["padding"] = sum(h["sft/padding"] for h in history) / len(history)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_sft")
    parser.add_argument("--ours", nargs="*", default=[], help="Hydra overrides for our runs")
    parser.add_argument("--skip-trl", action="store_true")
    args = parser.parse_args()

    from rlhf.models import resolve_model_path

    model = str(resolve_model_path("smollm2", None))
    python = None if args.skip_trl else ensure_trl_venv()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    rows = args.out / "demonstrations.jsonl"
    write_rows(rows, 512)
    machine = {"cpus": os.cpu_count(), "memory_gib": psutil.virtual_memory().total / 1024**3, "ours_overrides": args.ours}
    results = []
    for threads in args.threads:
        work = args.out / f"threads{threads}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        ours = run_ours(rows, args, threads, work)
        print(f"ours threads={threads}: {ours['tokens_per_second']:.0f} tokens/s ({ours['seconds_per_step']:.2f} "
              f"s/step; learner {ours['learner_tokens_per_second']:.0f} tokens/s, padding {ours['padding']:.1%}), "
              f"{ours['peak_memory_gib']:.2f} GiB", flush=True)
        result = {"threads": threads, "ours": ours}
        if not args.skip_trl:
            (work / "trl").mkdir()
            trl = run_trl(python, rows, model, args, threads, work / "trl")
            print(f"TRL  threads={threads}: {trl['tokens_per_second']:.0f} tokens/s ({trl['seconds_per_step']:.2f} "
                  f"s/step), {trl['peak_memory_gib']:.2f} GiB", flush=True)
            result.update(trl=trl, ratio=ours["tokens_per_second"] / trl["tokens_per_second"])
        results.append(result)
        path.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    print(f"\n{'threads':>7} {'ours tok/s':>10} {'TRL tok/s':>9} {'ours/TRL':>8}")
    for r in results:
        if "trl" in r:
            print(f"{r['threads']:>7} {r['ours']['tokens_per_second']:>10.0f} {r['trl']['tokens_per_second']:>9.0f} "
                  f"{r['ratio']:>8.2f}")
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
