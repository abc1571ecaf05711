"""Run several algorithms on the same task and budget and draw their reward curves on one plot.

    python scripts/compare_algorithms.py                       # tiny model, synthetic BLEU task, ~6 minutes
    python scripts/compare_algorithms.py --algos grpo ppo --steps 40 -- train.lr=5e-3
    python scripts/compare_algorithms.py --task default --steps 20 --out /abs/folder   # SmolLM2 on gsm_symbolic
    python scripts/compare_algorithms.py --async-vs-sync      # GRPO synchronous vs one-step-off-policy

Everything after `--` is passed to every run as Hydra overrides. Prints a table of first/last rewards, each run's mean
clip fraction and the range of its loss's ratio pi / pi_old over all steps (exactly 1 - 1 when its updates are
on-policy: then no clip can act), and draws reward and clip fraction against the step (reward_curves.png).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.config import compose_config, load_config  # noqa: E402
from rlhf.driver import run  # noqa: E402
from rlhf.models.tiny import build_tiny_model  # noqa: E402
from rlhf.tracking import plot_comparison  # noqa: E402

SYNTHETIC_TASK = {"prompt": "Repeat the letter a, request {i}.", "references": ["a a a a a a a a a a"]}


def synthetic_overrides(out: Path) -> list[str]:
    """A task a tiny random model learns in a few dozen steps: BLEU against a reference repeating one word."""
    task = out / "task.jsonl"
    with open(task, "w") as f:
        for i in range(16):
            f.write(json.dumps({"prompt": SYNTHETIC_TASK["prompt"].format(i=i),
                                "references": SYNTHETIC_TASK["references"]}) + "\n")
    model = build_tiny_model(out / "tiny-model")
    return ["model=path", f"model.path={model}", "data=file", f"data.path={task}", "prompts_per_step=4",
            "algo.group_size=8", "rollout.max_new_tokens=12", "rollout.temperature=1.0", "train.lr=1e-2",
            "critic.lr=1e-2", "train.micro_batch_size=16", "critic.micro_batch_size=16",
            # BLEU starts near 0.06 here: x10, and (see kl_override) a KL weight of 0.01 rather than the presets'
            # 0.05, keep the KL penalty from drowning the signal
            "reward.functions.0.weight=10", "eval.every=0"]


def kl_override(algo: str) -> list[str]:
    """A KL weight of 0.01 where the algorithm puts KL in the reward; the others keep their preset's loss term."""
    from rlhf.algorithms import ADVANTAGE_ESTIMATORS

    estimator = load_config(compose_config(f"algo={algo}", "output_dir=/tmp/x")).algo.estimator.name
    return ["algo.kl.reward_beta=0.01"] if getattr(ADVANTAGE_ESTIMATORS.get(estimator), "kl_in_reward", False) else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["grpo", "ppo", "rloo", "reinforce_pp", "dapo", "gspo", "cispo"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--task", choices=["synthetic", "default"], default="synthetic",
                        help="synthetic: tiny model and BLEU task; default: the default experiment's model and data")
    parser.add_argument("--out", type=Path, default=Path("outputs/compare_algorithms").absolute())
    parser.add_argument("--async-vs-sync", action="store_true",
                        help="instead of algorithms: GRPO synchronous against one-step-off-policy (algo/correction=tis)")
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    base = (synthetic_overrides(args.out) if args.task == "synthetic" else []) + overrides

    synthetic = args.task == "synthetic"
    runs = {algo: [f"algo={algo}", *(kl_override(algo) if synthetic else [])] for algo in args.algos}
    if args.async_vs_sync:
        runs = {"grpo sync": ["algo=grpo"],
                "grpo one-step-off-policy": ["algo=grpo", "rollout.mode=one_step_off", "algo/correction=tis"]}
    curves, clipped, spread, seconds = {}, {}, {}, {}
    for name, extra in runs.items():
        run_dir = args.out / name.replace(" ", "_")
        cfg = load_config(compose_config(*base, *extra, f"steps={args.steps}", f"output_dir={run_dir}",
                                         "logging.wandb_mode=disabled", "save_final=false",
                                         "checkpoint.every=0"))
        run(cfg)
        history = [h for h in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "reward" in h]
        curves[name] = [h["reward"] for h in history]
        clipped[name] = [h.get("clip_fraction", 0.0) for h in history]
        # the loss's ratio (pi / pi_old; GSPO's per sequence) over every step: exactly 1 when the updates are on-policy
        lows = [v for h in history for k, v in h.items() if k.endswith("ratio_min") and not k.startswith("correction")]
        highs = [v for h in history for k, v in h.items() if k.endswith("ratio_max") and not k.startswith("correction")]
        spread[name] = (min(lows), max(highs)) if lows else (float("nan"), float("nan"))
        seconds[name] = sorted(h["time/step"] for h in history[2:])[len(history[2:]) // 2] if len(history) > 2 else None

    picture = plot_comparison(curves, args.out / "reward_curves.png", clipped)
    print(f"\n{'run':<28}{'first 5 steps':>14}{'last 5 steps':>14}{'clip fraction':>14}{'ratio range':>20}"
          f"{'median s/step':>14}")
    for name, rewards in curves.items():
        low, high = spread[name]
        print(f"{name:<28}{sum(rewards[:5]) / 5:>14.3f}{sum(rewards[-5:]) / 5:>14.3f}"
              f"{sum(clipped[name]) / len(clipped[name]):>14.4f}{f'{low:.4f} - {high:.4f}':>20}"
              f"{seconds[name] or float('nan'):>14.2f}")
    print(f"plot: {picture}")


if __name__ == "__main__":
    main()
