"""Does the driver keep up as rollout actors are added? Many light engines, one tiny model (issue 6).

    python scripts/bench_driver.py                       # 8, 16 and 32 engines
    python scripts/bench_driver.py --engines 8 64        # 64 needs ~22 GiB: each engine is a process of its own
    python scripts/bench_driver.py --prompts 32          # the same 32 prompts per step, spread over more engines

Each setting runs `python -m rlhf.train experiment=smoke` with N transformers engines (1 thread each, 0 CPUs
reserved) and N prompts per step (one prompt per engine), so the work per engine stays the same while the
driver fans out to and gathers from more actors; with --prompts the batch stays fixed instead, so any growth of
the driver's time is the cost of the actors alone. Prints, per N: median seconds per step, the driver's CPU
seconds per step (`time/driver_cpu`: every thread of the driver process, Ray's serialisation included) and its
share of the step. Flat driver seconds as N grows = the driver is not the bottleneck. Figures also go to
outputs/bench_driver/<time>.json.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from training_runs import REPO, train


def run(engines: int, prompts: int, steps: int, warmup: int, out: Path) -> dict:
    overrides = ["experiment=smoke", "rollout.engine=hf", f"rollout.engines={engines}", "rollout.threads=1",
                 "rollout.num_cpus=0", "train.num_cpus=0", f"prompts_per_step={prompts}", "algo.group_size=2",
                 f"train.micro_batch_size={2 * prompts}", "algo.kl.beta=0", f"data.size={prompts * (steps + warmup)}",
                 f"steps={steps + warmup}", "checkpoint.every=0", "save_final=false", "logging.wandb_mode=disabled",
                 "logging.plot=false", "logging.progress_bar=false", "preflight.enabled=false", "eval.every=0"]
    history = train(overrides, out, f"{engines} engines")[warmup:]
    median = {key: statistics.median(h[key] for h in history) for key in history[0] if key.startswith("time/")}
    return {"engines": engines, "prompts_per_step": prompts, "seconds_per_step": median["time/step"],
            "driver_cpu_seconds": median["time/driver_cpu"], "driver_share": median["time/driver_cpu"] / median["time/step"], "phases": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--prompts", type=int, default=None, help="prompts per step (default: one per engine)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_driver")
    args = parser.parse_args()

    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    results = []
    for engines in args.engines:
        result = run(engines, args.prompts or engines, args.steps, args.warmup, args.out / f"engines-{engines}")
        results.append(result)
        path.write_text(json.dumps(results, indent=1))
        print(f"{engines:>3} engines, {result['prompts_per_step']} prompts: {result['seconds_per_step']:.2f} s/step, "
              f"driver CPU {result['driver_cpu_seconds']:.3f} s/step ({100 * result['driver_share']:.1f}% of the step)", flush=True)
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
