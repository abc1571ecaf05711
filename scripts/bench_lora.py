"""LoRA against full fine-tuning on the default model (issue 16): policy-step time, policy-actor peak memory,
whole-run peak memory and weight-sync time, back to back on the same work.

    python scripts/bench_lora.py                       # rank 16 against full fine-tuning, 6 timed steps each
    python scripts/bench_lora.py --ranks 8 16 --steps 4 -- algo.kl.beta=0

Each run is `python -m rlhf.train` on SmolLM2-135M-Instruct (the default experiment's data and settings, no
evaluation, no checkpoints) with `train.lora.rank=R` (0: full fine-tuning). Figures: the median over the timed
steps (after `--warmup`) of `time/train` (the policy's update; with the default KL term also, under LoRA, the
reference pass of the next step is the policy's) and `time/weight_sync`, `time/step`; the peak RSS of the policy
actor's process and of the whole process tree (Ray workers included; RSS counts shared pages once per process).
Writes outputs/bench_lora/<time>.json.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_vs_trl import run_tree  # noqa: E402


def run(rank: int, args, work: Path) -> dict:
    out = work / f"rank{rank}"
    overrides = [f"train.lora.rank={rank}", f"steps={args.warmup + args.steps}", "eval.every=0", "checkpoint.every=0",
                 "save_final=false", "logging.wandb_mode=disabled", "logging.plot=false", "logging.progress_bar=false",
                 "preflight.enabled=false", f"output_dir={out}", f"hydra.run.dir={out}", *args.overrides]
    if rank:
        overrides.append(f"train.lr={args.lora_lr}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    memory = run_tree([sys.executable, "-m", "rlhf.train", *overrides], env, work / f"rank{rank}.log")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = history[args.warmup:]
    policy = [v for name, v in memory["peak_rss_per_process_gib"].items() if "PolicyActor" in name]
    return {"rank": rank, **{k.replace("time/", "seconds_"): statistics.median(h[k] for h in timed)
                             for k in ("time/train", "time/weight_sync", "time/step", "time/reference")
                             if k in timed[0]},
            "policy_actor_peak_rss_gib": max(policy) if policy else None,
            "whole_run_peak_rss_gib": memory["peak_memory_gib"], "reward_first": history[0]["reward"],
            "reward_last": history[-1]["reward"], "steps_timed": len(timed), "processes": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", nargs="+", type=int, default=[16], help="LoRA ranks to compare with full FT")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lora-lr", type=float, default=1e-4, help="LoRA's learning rate (full FT keeps train.lr)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_lora")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args()

    work = args.out / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    results = [run(rank, args, work) for rank in [0, *args.ranks]]
    (work.with_suffix(".json")).write_text(json.dumps({"cpus": os.cpu_count(), "overrides": args.overrides,
                                                       "results": results}, indent=1))
    print(f"{'train.lora.rank':>16} {'policy step s':>14} {'weight sync s':>14} {'step s':>8} "
          f"{'policy peak GiB':>16} {'run peak GiB':>13}")
    for r in results:
        print(f"{r['rank'] or 'full FT':>16} {r['seconds_train']:>14.2f} {r['seconds_weight_sync']:>14.2f} "
              f"{r['seconds_step']:>8.2f} {r['policy_actor_peak_rss_gib'] or float('nan'):>16.2f} "
              f"{r['whole_run_peak_rss_gib']:>13.2f}")
    print(f"written to {work.with_suffix('.json')}")


if __name__ == "__main__":
    main()
