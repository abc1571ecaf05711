"""The default experiment in fp32 and in bf16 on this CPU, one after the other: wall time, seconds per step by phase,
held-out evaluations and training reward, as a table and a figure (issue 35: the measured choice, before and after).

    python scripts/compare_precision.py                          # the two runs (~9 + 7 min on 2 cores)
    python scripts/compare_precision.py --from fp32=/runs/a bf16=/runs/b    # the table and figure of finished runs
    python scripts/compare_precision.py -- steps=14              # Hydra overrides for both runs after `--`
    python scripts/compare_precision.py --settings fp32 bf16 --seeds 0 1 2 --from fp32@0=/runs/a   # seeds: their spread
    python scripts/compare_precision.py --seeds 0 1 2 --final-eval 256   # and each run's final weights on 256 fresh
                                                                          # questions (learning, not decoding), and
                                                                          # whether the settings differ beyond the seeds' spread

Each run is `python -m rlhf.train` with `train.bf16=false` or `true` (the engine and the reference follow it); the
wall time is the whole command's, start-up included. Writes docs/figures/precision_default_experiment.png and
docs/benchmarks/precision-<date>.json; with several seeds (`seed=N` each; a run is named setting@seed)
docs/figures/precision_seeds.png (each seed's curve and their mean) and docs/benchmarks/precision-<date>-seeds.json.
"""

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from training_runs import read_history, train  # noqa: E402 (after the path)

SETTINGS = {"fp32": ["train.bf16=false"], "bf16": ["train.bf16=true"]}


def final_eval(run: Path, questions: int, metric: str, what: str) -> float:
    """The run's final weights (`run`/final) on `questions` fresh questions, a steadier figure than the run's 32
    held-out ones. The command trains one step it does not need (steps must be > 0); the figure is the evaluation
    before it. Kept in `run`/final_eval-N and read from there when the run is read again."""
    out = run / f"final_eval-{questions}"
    if not (out / "metrics.jsonl").exists():
        if not (run / "final" / "config.json").exists():
            raise FileNotFoundError(f"{what}: no final weights in {run / 'final'} to evaluate (save_final=false, or "
                                    "deleted)")
        # reasoning-gym's gsm_symbolic generated with seed 1 (the default data's is 0): none was trained on; decoded
        # in fp32 whatever the run trained in, the same for every run
        train(["model=path", f"model.path={run / 'final'}", "steps=1", "eval.every=1", "checkpoint.every=0",
               f"eval.data={{seed:1,size:{questions}}}", "train.bf16=false"], out, f"{what}'s final evaluation")
    return next(h[metric] for h in read_history(out) if h["step"] == 0 and metric in h)


def summarise(history: list[dict], seconds: float | None, metric: str) -> dict:
    steps = [h for h in history if "reward" in h]
    evals = {h["step"]: h[metric] for h in history if metric in h}
    phases = sorted(k for k in steps[0] if k.startswith("time/"))
    return {"wall_s": seconds, "evals": evals, "rewards": [h["reward"] for h in steps], "kl": [h["kl"] for h in steps],
            "median_s": {k: statistics.median(h[k] for h in steps[1:] if k in h) for k in phases},
            "logprob_gap": statistics.mean(h["logprob_gap"] for h in steps),
            "rollout_kl_last": steps[-1].get("rollout_kl")}


def seed_difference(first: tuple[str, list[float]], second: tuple[str, list[float]]) -> str:
    """Whether two settings' seeds differ by more than their spread: the difference of means, its standard error
    (Welch's), and an exact two-sided permutation test (every way of splitting the pooled seeds into groups of the
    same sizes; a small p says the labels matter)."""
    (a, xs), (b, ys) = first, second
    difference = statistics.mean(ys) - statistics.mean(xs)
    error = (statistics.variance(xs) / len(xs) + statistics.variance(ys) / len(ys)) ** 0.5
    pooled, total = xs + ys, sum(xs) + sum(ys)
    splits = [sum(chosen) for chosen in itertools.combinations(pooled, len(ys))]  # each split's second-group sum
    as_far = sum(abs(s / len(ys) - (total - s) / len(xs)) >= abs(difference) - 1e-12 for s in splits)
    return (f"{a} {statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f} (sd, {len(xs)} seeds), {b} "
            f"{statistics.mean(ys):.4f} ± {statistics.stdev(ys):.4f} ({len(ys)}): {b} - {a} = {difference:+.4f} ± "
            f"{error:.4f} (standard error); permutation p = {as_far / len(splits):.3f} ({len(splits)} splits)")


def setting_of(name: str) -> str:
    return name.split("@")[0]


def plot(results: dict, path: Path, metric: str) -> Path:
    """Held-out `metric`, the training reward and the policy's KL to the reference by step: per setting each run's
    curve, and with several seeds their mean (bold). The KL shows how far the policy has moved (bf16's lag, issue
    35, was seen there first)."""
    from rlhf.tracking import _pyplot, _save

    finals = all("final_eval" in r for r in results.values())
    fig, axes = _pyplot().subplots(1, 4 if finals else 3, figsize=(21 if finals else 16, 4))
    held_out, reward, kl = axes[:3]
    for i, setting in enumerate(dict.fromkeys(setting_of(name) for name in results)):
        runs = [r for name, r in results.items() if setting_of(name) == setting]
        colour = f"C{i}"  # a setting's seeds and their mean in one colour
        if finals:  # each run's final weights on the fresh questions, and the setting's mean
            values = [r["final_eval"] for r in runs]
            axes[3].scatter([i] * len(values), values, color=colour, alpha=0.5)
            axes[3].plot([i - 0.2, i + 0.2], [statistics.mean(values)] * 2, color=colour, linewidth=2)
        steps = sorted(set.intersection(*(set(r["evals"]) for r in runs)))
        smoothed = [[statistics.mean(r["rewards"][max(0, i - 4):i + 1]) for i in range(len(r["rewards"]))]
                    for r in runs]
        if len(runs) > 1:
            for r, mean in zip(runs, smoothed):
                held_out.plot(list(r["evals"]), list(r["evals"].values()), color=colour, alpha=0.3, linewidth=1)
                reward.plot(range(len(mean)), mean, color=colour, alpha=0.3, linewidth=1)
                kl.plot(range(len(r["kl"])), r["kl"], color=colour, alpha=0.3, linewidth=1)
        label = f"{setting} (mean of {len(runs)} seeds)" if len(runs) > 1 else setting
        held_out.plot(steps, [statistics.mean(r["evals"][s] for r in runs) for s in steps], marker="o", color=colour,
                      linewidth=2, label=label)
        length = min(len(m) for m in smoothed)
        reward.plot(range(length), [statistics.mean(m[i] for m in smoothed) for i in range(length)], color=colour,
                    linewidth=2, label=f"{label}, running mean of 5")
        kl.plot(range(length), [statistics.mean(r["kl"][i] for r in runs) for i in range(length)], color=colour,
                linewidth=2, label=label)
    held_out.set(xlabel="step", ylabel=metric, title=f"held-out {metric} (greedy)")
    reward.set(xlabel="step", ylabel="training reward", title="training reward")
    kl.set(xlabel="step", ylabel="kl", title="KL of the policy to the reference (k3, token mean)")
    for ax in (held_out, reward, kl):
        ax.grid(alpha=0.3)
        ax.legend()
    if finals:
        names = list(dict.fromkeys(setting_of(name) for name in results))
        axes[3].set(xticks=range(len(names)), xticklabels=names, xlim=(-0.5, len(names) - 0.5), ylabel=metric,
                    title="final weights, fresh questions (fp32 greedy)")
        axes[3].grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)  # written whole or not at all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="runs", nargs="*", default=[],
                        help="name=folder of finished runs to read (name: a setting, or setting@seed)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, help="runs of each setting, seed=N each (default: one "
                                                                  "run at the config's seed)")
    parser.add_argument("--metric", default="eval/bleu", help="the held-out figure to compare")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "compare_precision")
    parser.add_argument("--final-eval", type=int, metavar="N", help="also score each run's final weights on N "
                        "fresh questions in fp32 (~5 min for 256 on 2 cores; the runs need their final/ folder; the "
                        "evaluation takes the default config, not the overrides after --)")
    args, overrides = parser.parse_known_args()
    args.out = args.out.resolve()  # the runs' commands start in the repository
    overrides = [o for o in overrides if o != "--"]
    folders = dict(item.split("=", 1) for item in args.runs)
    several = args.seeds is not None and len(args.seeds) > 1
    results = {}
    for setting in args.settings:
        for seed in args.seeds or [None]:
            name = f"{setting}@{seed}" if several else setting
            if name in folders:
                folder = Path(folders[name]).resolve()  # the runs' commands start in the repository
                results[name] = summarise(read_history(folder), None, args.metric)
            else:
                started = time.perf_counter()
                seeded = [f"seed={seed}"] if seed is not None else []
                folder = args.out / name.replace("+", "_").replace("@", "-seed")
                history = train([*SETTINGS[setting], *seeded, *overrides], folder, f"the {name} run")
                results[name] = summarise(history, time.perf_counter() - started, args.metric)
            if args.final_eval:
                results[name]["final_eval"] = final_eval(folder, args.final_eval, args.metric, f"the {name} run")

    print(f"\n{'':10}{'wall':>8}{'s/step':>8}{'train':>8}{'generate':>9}{'gap':>8}  held-out {args.metric} by step")
    for name, r in results.items():
        wall = f"{r['wall_s'] / 60:.1f}m" if r["wall_s"] else "-"
        m = r["median_s"]
        evals = ", ".join(f"{step}: {value:.4f}" for step, value in r["evals"].items())
        print(f"{name:10}{wall:>8}{m['time/step']:>8.2f}{m['time/train']:>8.2f}{m['time/generate']:>9.2f}"
              f"{r['logprob_gap']:>8.4f}  {evals}")
    if several:  # each setting's mean and standard deviation over its seeds, step by step
        for setting in args.settings:
            runs = [r for name, r in results.items() if setting_of(name) == setting]
            steps = sorted(set.intersection(*(set(r["evals"]) for r in runs)))
            print(f"{setting:10}mean ± sd over seeds {args.seeds}: " + ", ".join(
                f"{s}: {statistics.mean(r['evals'][s] for r in runs):.4f} ± "
                f"{statistics.stdev(r['evals'][s] for r in runs):.4f}" for s in steps))
    if args.final_eval:
        print(f"final weights, {args.final_eval} fresh questions, fp32 greedy {args.metric}: " + ", ".join(
            f"{name} {r['final_eval']:.4f}" for name, r in results.items()))
        finals = {s: [r["final_eval"] for name, r in results.items() if setting_of(name) == s] for s in args.settings}
        if several and len(finals) == 2:
            print(seed_difference(*finals.items()))
    day, suffix = time.strftime("%Y%m%d"), "-seeds" if several else ""
    out = REPO / "docs" / "benchmarks" / f"precision-{day}{suffix}.json"
    out.write_text(json.dumps({"overrides": overrides, "seeds": args.seeds, "results": results}, indent=1))
    figure = "precision_seeds.png" if several else "precision_default_experiment.png"
    print(f"figures: {out}\nplot: {plot(results, REPO / 'docs' / 'figures' / figure, args.metric)}")


if __name__ == "__main__":
    main()
