"""The Pareto picture: PAMA against linear scalarisation at several weights, two objectives, one budget.

    python scripts/pareto.py                              # tiny model, synthetic task: BLEU vs conciseness
    python scripts/pareto.py --task default --steps 28    # experiment=pama: SmolLM2, gsm_symbolic (slow: ~15 min a run)
    python scripts/pareto.py --weights 1 0.5 0 -- algo=ppo

Each run's final objective pair (mean of its last `--tail` steps) becomes a point; the starting point (mean of
the first steps, shared by all runs) is drawn too. Prints a table and writes pareto.png and pareto.json.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.config import compose_config, load_config  # noqa: E402
from rlhf.driver import run  # noqa: E402
from rlhf.models.tiny import build_tiny_model  # noqa: E402
from rlhf.tracking import plot_pareto  # noqa: E402


def synthetic_overrides(out: Path) -> list[str]:
    """BLEU against ten a's (wants 10 words) against conciseness (wants none): the two pull apart."""
    task = out / "task.jsonl"
    with open(task, "w") as f:
        for i in range(16):
            f.write(json.dumps({"prompt": f"Repeat the letter a, request {i}.", "references": ["a a a a a a a a a a"]})
                    + "\n")
    model = build_tiny_model(out / "tiny-model")
    return ["model=path", f"model.path={model}", "data=file", f"data.path={task}", "prompts_per_step=4",
            "algo.group_size=8", "rollout.max_new_tokens=12", "rollout.temperature=1.0", "train.lr=1e-2",
            "critic.lr=1e-2", "train.micro_batch_size=16", "critic.micro_batch_size=16", "algo.kl.beta=0",
            "reward.functions=[{name: bleu, weight: 0.5}, {name: conciseness, weight: 0.5, kwargs: {max_words: 12}}]",
            "eval.every=0"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", type=float, default=[1.0, 0.75, 0.5, 0.25, 0.0],
                        help="weights of the first objective for linear scalarisation (the second gets 1 - w)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tail", type=int, default=5, help="steps averaged for a run's final point")
    parser.add_argument("--task", choices=["synthetic", "default"], default="synthetic")
    parser.add_argument("--out", type=Path, default=Path("outputs/pareto").absolute())
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    base = (synthetic_overrides(args.out) if args.task == "synthetic" else ["experiment=pama"]) + overrides

    runs = {"PAMA": ["reward.aggregation=pama"]}
    runs.update({f"linear w={w:g}": ["reward.aggregation=weighted_sum", f"reward.weights=[{w},{1 - w}]"]
                 for w in args.weights})
    points, labels, start = {}, None, None
    for name, extra in runs.items():
        run_dir = args.out / name.replace(" ", "_").replace("=", "")
        cfg = load_config(compose_config(*base, *extra, f"steps={args.steps}", f"output_dir={run_dir}",
                                         "logging.wandb_mode=disabled", "save_final=false", "checkpoint.every=0"))
        labels = cfg.reward.objective_labels()
        if len(labels) != 2:
            raise SystemExit(f"the Pareto picture needs exactly two objectives, got {labels}")
        run(cfg)
        history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        mean = lambda rows, key: sum(r[f"reward/{key}"] for r in rows) / len(rows)  # noqa: E731
        points[name] = [mean(history[-args.tail :], k) for k in labels]
        start = start or [mean(history[: args.tail], k) for k in labels]

    picture = plot_pareto(points, start, labels, args.out / "pareto.png")
    (args.out / "pareto.json").write_text(json.dumps({"objectives": labels, "start": start, "final": points}, indent=1))
    print(f"\n{'run':<18}{labels[0]:>16}{labels[1]:>16}")
    print(f"{'(start)':<18}{start[0]:>16.3f}{start[1]:>16.3f}")
    for name, (a, b) in points.items():
        print(f"{name:<18}{a:>16.3f}{b:>16.3f}")
    print(f"plot: {picture}")


if __name__ == "__main__":
    main()
