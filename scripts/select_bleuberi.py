"""BLEUBERI's data selection (spec §2.2): score a prompt pool with ONE sample of the base model each (through
the rollout engine) against the references, and keep the N hardest (lowest reward), easiest, middle, or a
random N. Writes a JSONL the trainer reads with `experiment=bleuberi data.path=<out>`.

    python scripts/select_bleuberi.py --num 64 --out /abs/bleuberi-hard.jsonl
    python scripts/select_bleuberi.py --mode medium --num 64 --out /abs/medium.jsonl -- data.size=1024
    python scripts/select_bleuberi.py --num 32 --out /abs/x.jsonl -- model=path model.path=/abs/base data=file data.path=/abs/pool.jsonl

Overrides after `--` are Hydra overrides (model, data pool, reward: the configured reward's weighted sum
is the score, BLEU by default). Sampling follows the paper: temperature 0.7, top-p 0.9, seed 42.
"""

import argparse
import json
import os
import random
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.config import compose_config, load_config  # noqa: E402

MODES = ("hard", "easy", "medium", "random")


def select(scores: list[float], num: int, mode: str, seed: int) -> list[int]:
    """Indices of the selected rows. hard: lowest scores; easy: highest; medium: the middle slice of the
    ranking; random: a seeded sample (scores unused). Unscorable rows (NaN) are never selected by score."""
    if mode == "random":
        return sorted(random.Random(seed).sample(range(len(scores)), min(num, len(scores))))
    ranked = sorted((i for i, s in enumerate(scores) if s == s), key=lambda i: (scores[i], i))
    if mode == "hard":
        return ranked[:num]
    if mode == "easy":
        return ranked[::-1][:num]
    if mode == "medium":
        start = max(0, (len(ranked) - num) // 2)
        return ranked[start : start + num]
    raise ValueError(f"unknown selection mode {mode!r}; choose one of {MODES}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=MODES, default="hard")
    parser.add_argument("--num", type=int, required=True, help="prompts to keep")
    parser.add_argument("--out", type=Path, required=True, help="the selected rows, JSONL")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=42)
    args, overrides = parser.parse_known_args()
    overrides = [o for o in overrides if o != "--"]
    cfg = load_config(compose_config("output_dir=/tmp/select-bleuberi", f"seed={args.seed}", *overrides))
    rows = scored_pool(cfg, args) if args.mode != "random" else None
    write(cfg, rows, args)


def scored_pool(cfg, args):
    import ray
    import torch
    from transformers import AutoTokenizer

    from actors.launch import launch_actors
    from rlhf.data import PromptStream, load_rows, read_chat_template
    from rlhf.driver import connect_ray
    from rlhf.engines.base import SamplingSettings
    from rlhf.groups import objective_matrix
    from rlhf.models import resolve_model_path
    from rlhf.rewards.aggregation import weighted_sum
    from rlhf.rollout.generation import generate
    from rlhf.rewards.scoring import TrainerState
    from rlhf.rollout.scoring import score
    from tqdm import tqdm

    model_path = resolve_model_path(cfg.model.source, cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    stream = PromptStream(load_rows(cfg.data), tokenizer, cfg.data.system_prompt,
                          cfg.data.max_prompt_tokens, cfg.seed, cfg.data.bad_rows,
                          read_chat_template(cfg.data.chat_template, tokenizer), dict(cfg.data.chat_template_kwargs or {}))
    started = connect_ray(cfg)
    actors = launch_actors(cfg, model_path, learners=False)
    settings = SamplingSettings(cfg.rollout.max_new_tokens, args.temperature, args.top_p, seed=args.seed)
    weights = torch.tensor(cfg.reward.objective_weights())
    scores, completions, chunk = [], [], 16
    try:
        for start in tqdm(range(0, len(stream), chunk), desc="scoring the pool"):
            batch = stream.batch(range(start, min(start + chunk, len(stream))))
            samples = generate(actors, batch.token_ids, 1, replace(settings, seed=args.seed + start))
            texts = [group[0].text for group in samples]
            per_objective = score(actors.reward, actors.reward_models, batch, [group[0] for group in samples], 1,
                                  TrainerState(0, cfg.steps))
            scores += weighted_sum(objective_matrix(per_objective, cfg.reward.objective_labels()), weights).tolist()
            completions += texts
    finally:
        actors.kill()
        if started:
            ray.shutdown()
    return stream.everything().rows, scores, completions


def write(cfg, scored, args) -> None:
    if scored is None:  # random: no model needed
        from rlhf.data import load_rows

        rows = load_rows(cfg.data)
        scores = completions = [None] * len(rows)
        chosen = select([0.0] * len(rows), args.num, "random", args.seed)
    else:
        rows, scores, completions = scored
        chosen = select(scores, args.num, args.mode, args.seed)
    if len(chosen) < args.num:
        print(f"warning: only {len(chosen)} rows could be selected (pool of {len(rows)})", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in chosen:
            row = {k: v for k, v in rows[i].items() if not k.startswith("rg_")}  # keep the canonical columns
            f.write(json.dumps({**row, "selection_score": scores[i], "base_completion": completions[i]},
                               default=str) + "\n")
    os.replace(tmp, args.out)
    if scored is not None:
        plot(scores, chosen, args)
        kept = [scores[i] for i in chosen]
        print(f"pool: {len(rows)} prompts, mean score {sum(s for s in scores if s == s) / len(rows):.4f}; "
              f"kept {len(chosen)} ({args.mode}): scores {min(kept):.4f} .. {max(kept):.4f}")
    print(f"wrote {args.out}")


def plot(scores: list[float], chosen: list[int], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([s for s in scores if s == s], bins=40, color="lightgrey", label="pool")
    ax.hist([scores[i] for i in chosen], bins=40, color="tab:red", alpha=0.7, label=f"selected ({args.mode})")
    ax.set_xlabel("score of one base-model sample")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
