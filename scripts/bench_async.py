"""Samples per second of the rollout modes side by side on the same work: sync, one_step_off, and async at
max_staleness 1 and 4 with partial rollouts on and off, with 2 rollout engines.

    python scripts/bench_async.py                          # default model, 3 timed steps per layout (~30 minutes)
    python scripts/bench_async.py --steps 2 --max-new-tokens 64 --layouts sync async-1-partial

Work: SmolLM2-135M-Instruct on gsm_symbolic prompts, 4 prompts x 4 samples per step, completions of up to
--max-new-tokens (256) tokens: most end after 60-150, a few run to the budget (the long tail). GRPO without a
reference, fp32; one thread per engine, the learner one (two in the synchronous layout, whose phases take turns). Each layout runs as `python -m rlhf.train` in a process of its own.
Prints, per layout: samples/s and tokens/s over the timed steps (after --warmup steps), the median step's phase
breakdown, and the idle fractions: in async runs each engine's and the learner's own (async/*_idle); in the others
estimated from the phases (an engine is idle outside `generate`, the learner outside `train`). Writes
outputs/bench_async/<time>.json. scripts/simulate_async.py turns the measured costs into a prediction for GPUs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORRECTED = ["algo/correction=tis"]
# The synchronous layout's phases take turns: its learner gets both cores (two threads); the others run roles side by
# side, one thread each (each engine one, the learner one: three threads on two cores in async)
LAYOUTS = {
    "sync": ["rollout.mode=sync", "train.threads=2"],
    "one_step_off": ["rollout.mode=one_step_off", *CORRECTED],
    "async-1-partial": ["rollout.mode=async", "rollout.max_staleness=1", "rollout.partial_rollouts=true", *CORRECTED],
    "async-1-whole": ["rollout.mode=async", "rollout.max_staleness=1", "rollout.partial_rollouts=false", *CORRECTED],
    "async-4-partial": ["rollout.mode=async", "rollout.max_staleness=4", "rollout.partial_rollouts=true", *CORRECTED],
    "async-4-whole": ["rollout.mode=async", "rollout.max_staleness=4", "rollout.partial_rollouts=false", *CORRECTED],
}


def run_layout(name: str, args, work: Path) -> dict:
    out = work / name
    overrides = [f"prompts_per_step={args.prompts}", "algo.group_size=4", f"rollout.max_new_tokens={args.max_new_tokens}",
                 "algo.kl.beta=0", "rollout.engines=2", "rollout.num_cpus=0.5", "rollout.threads=1", "train.threads=1",
                 "train.micro_batch_size=4", f"steps={args.warmup + args.steps}",
                 "checkpoint.every=0", "save_final=false", "logging.wandb_mode=disabled", "logging.plot=false",
                 "logging.progress_bar=false", "preflight.enabled=false", "eval.every=0", f"output_dir={out}",
                 f"hydra.run.dir={out}", *LAYOUTS[name], *args.extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(work / f"{name}.log", "w") as log:
        subprocess.run([sys.executable, "-m", "rlhf.train", *overrides], cwd=REPO, env=env, stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    history = [h for h in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "reward" in h]
    timed = history[args.warmup:]
    wall = sum(h["time/step"] for h in timed)
    samples = len(timed) * args.prompts * 4
    tokens = sum(h["completion_length"] for h in timed) * args.prompts * 4
    phases = {k.removeprefix("time/"): statistics.median(h.get(k, 0.0) for h in timed)
              for k in timed[0] if k.startswith("time/") and k != "time/driver_cpu"}
    if "async/learner_idle" in timed[0]:
        idle = {k.removeprefix("async/"): statistics.mean(h[k] for h in timed) for k in timed[0] if k.endswith("_idle")}
        idle["staleness_mean"] = statistics.mean(h["async/staleness_mean"] for h in timed)
        idle["interrupted_per_step"] = statistics.mean(h["async/interrupted_push"] + h["async/interrupted_eval"]
                                                        for h in timed)
    else:  # estimated from the phases: engines generate only in `generate`, the learner computes only in `train`
        step = phases["step"]
        idle = {"engines_idle (est.)": max(0.0, 1 - phases.get("generate", 0.0) / step),
                "learner_idle (est.)": max(0.0, 1 - phases.get("train", 0.0) / step)}
    return {"layout": name, "samples_per_second": samples / wall, "tokens_per_second": tokens / wall,
            "seconds_per_step": wall / len(timed), "completion_length": tokens / samples,
            "lengths_max": max(h["completion_length"] for h in timed), "phases": phases, "idle": idle,
            "overrides": LAYOUTS[name] + args.extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per layout")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--extra", nargs="*", default=[], help="Hydra overrides added to every layout")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_async")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work, path, results = args.out / stamp, args.out / f"{stamp}.json", []
    work.mkdir()
    for name in args.layouts:
        result = run_layout(name, args, work)
        results.append(result)
        path.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "out"}, "results": results},
                                   indent=1))
        print(f"{name:>16}: {result['samples_per_second']:.3f} samples/s, {result['tokens_per_second']:.1f} tokens/s, "
              f"{result['seconds_per_step']:.1f} s/step (mean length {result['completion_length']:.0f}); phases " +
              ", ".join(f"{k} {v:.2f}" for k, v in result["phases"].items()) + "; " +
              ", ".join(f"{k} {v:.2f}" for k, v in result["idle"].items()), flush=True)
    base = next((r for r in results if r["layout"] == "sync"), results[0])
    print(f"\n{'layout':>16} {'samples/s':>9} {'x sync':>6} {'s/step':>6}")
    for r in results:
        print(f"{r['layout']:>16} {r['samples_per_second']:>9.3f} {r['samples_per_second'] / base['samples_per_second']:>6.2f} "
              f"{r['seconds_per_step']:>6.1f}")
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
