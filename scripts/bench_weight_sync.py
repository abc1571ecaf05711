"""What does one weight push cost, by route? The default model (SmolLM2-135M, fp32), one node.

    python scripts/bench_weight_sync.py                                  # shm and object_store, 1 engine
    python scripts/bench_weight_sync.py --routes object_store --engines 1 2

Each setting runs `python -m rlhf.train` on the default model with short steps (1 prompt, 4 samples of at most
16 tokens), synchronous (each push waits for every engine's reload) and prints the median `time/weight_sync`
(learner rank 0 publishing the weights + every engine reloading them) over the timed steps, with the step time.
Figures also go to outputs/bench_weight_sync/<time>.json.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from training_runs import REPO, train


def run(route: str, engines: int, steps: int, warmup: int, out: Path) -> dict:
    overrides = [f"rollout.weight_sync={route}", f"rollout.engines={engines}", "rollout.num_cpus=0", "train.num_cpus=0",
                 "prompts_per_step=1", "rollout.max_new_tokens=16", "train.micro_batch_size=4", "algo.kl.beta=0",
                 f"steps={steps + warmup}", "checkpoint.every=0", "save_final=false", "logging.wandb_mode=disabled",
                 "logging.plot=false", "logging.progress_bar=false", "preflight.enabled=false", "eval.every=0"]
    history = train(overrides, out, f"{route}, {engines} engines")[warmup:]
    return {"route": route, "engines": engines, "steps": len(history),
            "weight_sync_s": statistics.median(h["time/weight_sync"] for h in history),
            "step_s": statistics.median(h["time/step"] for h in history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", nargs="+", default=["shm", "object_store"])
    parser.add_argument("--engines", nargs="+", type=int, default=[1])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_weight_sync")
    args = parser.parse_args()

    stamp = time.strftime('%Y%m%d-%H%M%S')
    path = args.out / f"{stamp}.json"
    results = []
    for engines in args.engines:
        for route in args.routes:
            result = run(route, engines, args.steps, args.warmup, args.out / stamp / f"{route}-{engines}")
            results.append(result)
            path.write_text(json.dumps(results, indent=1))
            print(f"{route:>12}, {engines} engine(s): push {result['weight_sync_s']:.3f} s (median of "
                  f"{result['steps']}), step {result['step_s']:.2f} s", flush=True)
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
