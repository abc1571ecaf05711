"""BLEUBERI's comparison at our scale: SFT on the reference solutions, GRPO with BLEU (the default experiment), and SFT
then GRPO (a warm start), on the default model and data, the same number of training examples each, several seeds.

    python scripts/compare_sft_grpo.py                        # SmolLM2-135M on gsm_symbolic, 28 steps, 3 seeds
    python scripts/compare_sft_grpo.py --seeds 1 --steps 14   # a shorter look
    python scripts/compare_sft_grpo.py --match samples        # SFT sees prompts x samples demonstrations
    python scripts/compare_sft_grpo.py --tiny                 # the tiny random model, 2 steps, 1 seed (the test's)

Everything after `--` is passed to every run as Hydra overrides.

Equal training examples (`--match`): an example is a prompt with its reference (the worked solution). GRPO draws
`prompts_per_step` prompts a step (each sampled `algo.group_size` times and scored by BLEU against the reference); SFT
trains on `sft.batch_size` demonstrations a step (the prompt, the reference as its target). `--match prompts`
(default, BLEUBERI's: SFT and GRPO on the same data, each prompt once) gives SFT a batch of `prompts_per_step`
demonstrations; `--match samples` one of `prompts_per_step x group_size` (as many sequences through the learner as
GRPO's). Either way every arm takes `--steps` optimizer steps: SFT `steps` steps, GRPO `steps` steps, SFT then GRPO
`sft.steps = steps x --warm-fraction` warm-start steps then the rest as GRPO steps. Every arm draws from the same
training rows and is evaluated on the same held-out rows by the same evaluator (`eval.*`: greedy, BLEU against the
reference); SFT's demonstrations are cut to the GRPO run's completion budget (`data.truncate=true`), so no arm is
taught anything longer than GRPO may sample. SFT learns at `train.lr` (the default experiment's), the warm start at
the same rate (`sft.lr`).

Each run is `python -m rlhf.train` in a subprocess of its own (scripts/training_runs.py); its wall time is the whole
subprocess (start-up and evaluations included), beside the training steps' own time. Writes the results as JSON
(docs/benchmarks/compare_sft_grpo-<date>.json), a figure of held-out BLEU against training examples, each seed and the
mean over seeds (docs/figures/compare_sft_grpo.png), and prints a markdown table. With `--tiny` both go to `--out`.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from training_runs import train  # noqa: E402  (python -m rlhf.train in a subprocess)

ARMS = {"sft": "SFT on the references", "grpo": "GRPO with BLEU", "sft_then_grpo": "SFT then GRPO"}
# --tiny: the tiny random model on the default data (experiment=smoke), a few seconds of training per arm
TINY = ["experiment=smoke", "steps=2", "eval.every=1", "eval.held_out=2", "rollout.engine=hf",
        "preflight.enabled=false"]
# every run: nothing the comparison does not read
QUIET = ["logging.wandb_mode=disabled", "logging.progress_bar=false", "save_final=false", "checkpoint.every=0"]


def default_settings(overrides: list[str]) -> dict:
    """The budget the overrides leave: steps, prompts a step, samples a prompt, the learning rate, eval.every."""
    from rlhf.config import compose_config, load_config

    cfg = load_config(compose_config(*overrides, "output_dir=/tmp/unused"))
    return {"steps": cfg.steps, "prompts_per_step": cfg.prompts_per_step, "group_size": cfg.algo.group_size,
            "lr": cfg.train.lr, "eval_every": cfg.eval.every}


def plan(settings: dict, match: str, warm_fraction: float) -> dict:
    """Each arm's steps and examples a step (see the module's docstring)."""
    steps, prompts = settings["steps"], settings["prompts_per_step"]
    batch = prompts if match == "prompts" else prompts * settings["group_size"]
    warm = max(1, min(steps - 1, round(steps * warm_fraction)))
    return {"match": match, "steps": steps, "sft_batch": batch, "grpo_prompts": prompts,
            "group_size": settings["group_size"], "warm_steps": warm, "rl_steps_after_warm": steps - warm,
            "examples_per_step": batch, "examples": steps * batch}


def arm_overrides(arm: str, p: dict, lr: float) -> list[str]:
    """What makes each arm of the plan, added to the shared overrides."""
    if arm == "sft":
        return ["algo=sft", f"steps={p['steps']}", f"sft.batch_size={p['sft_batch']}", "data.truncate=true"]
    if arm == "grpo":
        return [f"steps={p['steps']}"]
    return [f"steps={p['rl_steps_after_warm']}", f"sft.steps={p['warm_steps']}", f"sft.batch_size={p['sft_batch']}",
            f"sft.lr={lr}", "data.truncate=true"]


def examples_seen(arm: str, step: int, p: dict) -> int:
    """Training examples behind the weights an evaluation at `step` saw (a warm start's steps run -warm .. -1)."""
    if arm == "sft_then_grpo":
        return p["examples_per_step"] * (step + p["warm_steps"])
    return p["examples_per_step"] * step


def curve(arm: str, history: list[dict], p: dict) -> list[list[float]]:
    """[examples, held-out BLEU] of every evaluation of a run."""
    return [[examples_seen(arm, h["step"], p), h["eval/bleu"]] for h in history if "eval/bleu" in h]


def run_arm(arm: str, seed: int, shared: list[str], p: dict, lr: float, out: Path, runner=train) -> dict:
    folder = out / f"{arm}-seed{seed}"
    started = time.perf_counter()
    history = runner([*shared, *arm_overrides(arm, p, lr), f"seed={seed}", *QUIET], folder, f"{arm} seed {seed}")
    wall = time.perf_counter() - started
    points = curve(arm, history, p)
    if not points:
        raise RuntimeError(f"{arm} seed {seed}: no held-out evaluation logged (eval.every must be > 0); see {folder}")
    return {"arm": arm, "seed": seed, "wall_s": wall, "train_s": sum(h.get("time/step", 0.0) for h in history),
            "bleu_start": points[0][1], "bleu": points[-1][1], "examples": points[-1][0], "curve": points}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[dict]) -> dict:
    """Per arm: held-out BLEU (mean, std over seeds, each seed), wall and training time, examples."""
    summary = {}
    for arm, name in ARMS.items():
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        bleu, std = _mean_std([r["bleu"] for r in mine])
        wall, wall_std = _mean_std([r["wall_s"] for r in mine])
        summary[arm] = {"name": name, "seeds": [r["seed"] for r in mine], "examples": mine[0]["examples"],
                        "bleu_start": statistics.fmean(r["bleu_start"] for r in mine), "bleu_mean": bleu,
                        "bleu_std": std, "bleu_per_seed": [r["bleu"] for r in mine], "wall_s_mean": wall,
                        "wall_s_std": wall_std, "train_s_mean": statistics.fmean(r["train_s"] for r in mine)}
    return summary


def table(summary: dict, p: dict) -> str:
    header = ("| arm | training examples | held-out BLEU (mean ± std over seeds) | per seed | from | wall time | "
              "training steps' time |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for s in summary.values():
        seeds = ", ".join(f"{b:.3f}" for b in s["bleu_per_seed"])
        lines.append(f"| {s['name']} | {s['examples']} | {s['bleu_mean']:.3f} ± {s['bleu_std']:.3f} | {seeds} | "
                     f"{s['bleu_start']:.3f} | {s['wall_s_mean'] / 60:.1f} min | {s['train_s_mean'] / 60:.1f} min |")
    unit = "prompts with their reference" if p["match"] == "prompts" else "sequences (prompts x samples)"
    lines.append(f"\nTraining examples: {unit}; every arm {p['steps']} optimizer steps (SFT then GRPO: "
                 f"{p['warm_steps']} + {p['rl_steps_after_warm']}).")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path, p: dict) -> Path:
    """Held-out BLEU against training examples: each seed thin, the mean over seeds thick, one colour per arm."""
    from rlhf.tracking import _pyplot, _save

    fig, ax = _pyplot().subplots(figsize=(7, 4.5))
    for k, arm in enumerate(ARMS):
        mine = [r for r in runs if r["arm"] == arm]
        if not mine:
            continue
        colour = f"C{k}"
        for r in mine:
            ax.plot(*zip(*r["curve"]), color=colour, alpha=0.3, linewidth=1, marker=".")
        by_x = {}
        for r in mine:
            for x, y in r["curve"]:
                by_x.setdefault(x, []).append(y)
        xs = sorted(by_x)
        ax.plot(xs, [statistics.fmean(by_x[x]) for x in xs], color=colour, linewidth=2.5, marker="o",
                label=f"{ARMS[arm]} (mean of {len(mine)})")
    if any(r["arm"] == "sft_then_grpo" for r in runs):
        ax.axvline(p["warm_steps"] * p["examples_per_step"], color="grey", linestyle=":", linewidth=1)
    unit = "prompts with their reference" if p["match"] == "prompts" else "sequences (prompts x samples)"
    ax.set_xlabel(f"training examples ({unit})")
    ax.set_ylabel("held-out BLEU (greedy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)


def main(argv: list[str] | None = None, runner=train) -> dict:
    """`runner(overrides, out, what) -> metrics lines`: how one run is made (a subprocess; the test runs in-process)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 for every arm")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of every arm (default: the config's)")
    parser.add_argument("--match", choices=["prompts", "samples"], default="prompts",
                        help="what a training example is (see above)")
    parser.add_argument("--warm-fraction", type=float, default=0.5, help="the warm start's share of the steps")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--tiny", action="store_true", help="the tiny random model, 2 steps, 1 seed unless --seeds")
    parser.add_argument("--out", type=Path, default=Path("outputs/compare_sft_grpo").absolute())
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    args, overrides = parser.parse_known_args(argv)
    overrides = [o for o in overrides if o != "--"]
    if args.tiny and "--seeds" not in (argv if argv is not None else sys.argv):
        args.seeds = 1
    shared = [*(TINY if args.tiny else []), *overrides, *([f"steps={args.steps}"] if args.steps else [])]
    settings = default_settings(shared)
    if not settings["eval_every"]:
        parser.error("eval.every must be > 0: held-out BLEU is what is compared")
    if settings["steps"] < 2 and "sft_then_grpo" in args.arms:
        parser.error("SFT then GRPO needs at least 2 steps")
    p = plan(settings, args.match, args.warm_fraction)
    args.out = args.out.absolute()
    args.out.mkdir(parents=True, exist_ok=True)
    day = time.strftime("%Y%m%d")
    json_path = args.json or (args.out / "compare_sft_grpo.json" if args.tiny
                              else REPO / "docs" / "benchmarks" / f"compare_sft_grpo-{day}.json")
    figure_path = args.figure or (args.out / "compare_sft_grpo.png" if args.tiny
                                  else REPO / "docs" / "figures" / "compare_sft_grpo.png")

    runs = []
    for seed in range(args.seeds):
        for arm in args.arms:
            runs.append(run_arm(arm, seed, shared, p, settings["lr"], args.out, runner))
            print(f"{arm} seed {seed}: held-out BLEU {runs[-1]['bleu_start']:.3f} -> {runs[-1]['bleu']:.3f} "
                  f"({runs[-1]['wall_s'] / 60:.1f} min)", flush=True)
    summary = summarise(runs)
    result = {"date": day, "overrides": shared, "plan": p, "lr": settings["lr"], "summary": summary, "runs": runs}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    plot(runs, figure_path, p)
    print(table(summary, p))
    print(f"results: {json_path}\nfigure: {figure_path}")
    return result


if __name__ == "__main__":
    main()
