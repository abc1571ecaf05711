"""Episodes per second and model tokens per second of multi-turn episodes, at 1, 2 and 4 turns, on the default
model; the same episodes played by an agent written against the OpenAI client through the run's endpoint
(`--endpoint`: `rlhf.agents.tasks:go_on`, env.agent); and TRL 1.16's GRPOTrainer on the same work where it can run it.

    python scripts/bench_agents.py                         # 1, 2, 4 turns, 2 prompts x 4 episodes, 3 timed steps
    python scripts/bench_agents.py --turns 1 2 --steps 4 --skip-trl --endpoint

Work: SmolLM2-135M-Instruct, gsm_symbolic prompts, 4 episodes per prompt, turns of at most 32 tokens, the
environment `rlhf.agents.tasks:GoOn` (it answers every turn with "Go on.", so every episode has exactly N turns),
reward BLEU of the last turn against the worked solution, GRPO without a reference (beta 0), fp32. Ours runs as
`python -m rlhf.train` with the --ours overrides (default: our fastest 2-core layout, as bench_vs_trl.py). TRL runs in
its own virtualenv (bench_vs_trl.py's): its episodes advance only on tool calls, which this model does not make
(its template has no tools and it writes none), so TRL's figure is the single-turn one, compared at 1 turn only.
Prints each run's median s/step, episodes/s, model tokens/s and phase breakdown; writes outputs/bench_agents/<time>.json.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from bench_vs_trl import ensure_trl_venv, run_ours, run_trl  # noqa: E402


def episodes(turns: int, agent: bool = False) -> list[str]:
    """The overrides of the work: GoOn's episodes of exactly `turns` turns, or its agent through the endpoint."""
    played = ["env.agent=rlhf.agents.tasks:go_on"] if agent else ["env.factory=rlhf.agents.tasks:GoOn", "env.reply=respond"]
    return [*played, f"env.max_turns={turns}", f"env.max_episode_tokens={turns * 56}", "data.max_prompt_tokens=512"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--trl-gradient-checkpointing", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--endpoint", action="store_true", help="also the OpenAI-client agent (env.agent) per turns")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_agents")
    parser.add_argument("--ours", nargs="*", default=["rollout.mode=one_step_off", "algo/correction=tis",
                                                      "rollout.threads=1", "train.threads=1", "reference.threads=1"])
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from rlhf.config import compose_config, load_config
    from rlhf.data.prompts import PromptStream, load_rows
    from rlhf.models import resolve_model_path

    args.out.mkdir(parents=True, exist_ok=True)
    path, results, base = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}.json", [], list(args.ours)
    for turns in args.turns:
        work = args.out / f"turns{turns}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        args.ours = [*base, *episodes(turns)]
        ours = run_ours(args, args.prompts, 0.0, work)
        ours["turns"] = turns
        results.append({"turns": turns, "ours": ours})
        print(f"ours  {turns} turn(s): {ours['seconds_per_step']:.2f} s/step, {ours['samples_per_second']:.3f} episodes/s, "
              f"{ours['tokens_per_second']:.1f} model tokens/s; phases " +
              ", ".join(f"{k.removeprefix('time/')} {v:.2f}" for k, v in ours["phases"].items()), flush=True)
        if args.endpoint:  # the same episodes, an agent's own loop through the OpenAI endpoint
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            args.ours = [*base, *episodes(turns, agent=True)]
            agent = run_ours(args, args.prompts, 0.0, work)
            results[-1].update(endpoint=agent, endpoint_ratio=agent["samples_per_second"] / ours["samples_per_second"])
            print(f"agent {turns} turn(s): {agent['seconds_per_step']:.2f} s/step, "
                  f"{agent['samples_per_second']:.3f} episodes/s ({results[-1]['endpoint_ratio']:.2f}x the "
                  "environment's)", flush=True)
        path.write_text(json.dumps(results, indent=1))
    if not args.skip_trl and 1 in args.turns:
        model = str(resolve_model_path("smollm2", None))
        cfg = load_config(compose_config("output_dir=/tmp/unused"))
        stream = PromptStream(load_rows(cfg.data), AutoTokenizer.from_pretrained(model), cfg.data.system_prompt,
                              cfg.data.max_prompt_tokens, cfg.seed)
        rows = [{"prompt": r["prompt"], "references": r["references"]}
                for _ in range(args.warmup + args.steps + 1) for r in stream.next_batch(args.prompts).rows]
        work = args.out / "trl"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        trl = run_trl(ensure_trl_venv(), rows, model, args, args.prompts, 0.0, 2, args.dtype, work)
        one = next(r for r in results if r["turns"] == 1)
        one["trl"], one["speedup"] = trl, one["ours"]["samples_per_second"] / trl["samples_per_second"]
        print(f"TRL   1 turn: {trl['seconds_per_step']:.2f} s/step, {trl['samples_per_second']:.3f} episodes/s; ours/TRL "
              f"{one['speedup']:.2f}x", flush=True)
        path.write_text(json.dumps(results, indent=1))
    print(f"\n{'turns':>5} {'ours s/step':>11} {'episodes/s':>10} {'model tok/s':>11} {'agent episodes/s':>16} "
          f"{'TRL episodes/s':>14}")
    for r in results:
        trl = f"{r['trl']['samples_per_second']:.3f}" if "trl" in r else "n/a"
        agent = f"{r['endpoint']['samples_per_second']:.3f}" if "endpoint" in r else "n/a"
        print(f"{r['turns']:>5} {r['ours']['seconds_per_step']:>11.2f} {r['ours']['samples_per_second']:>10.3f} "
              f"{r['ours']['tokens_per_second']:>11.1f} {agent:>16} {trl:>14}")
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
