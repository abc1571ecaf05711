"""One environment module, written once, run by TRL 1.16 and by us on the same rows (issue 31).

    python scripts/trl_env_side_by_side.py                      # the tiny random model, 8 rows, 4 steps a side
    python scripts/trl_env_side_by_side.py --model smollm2 --example-call   # SmolLM2-135M, prompts showing a call

The module is examples/trl_env_counter.py (class Counter: reset(**kwargs), one tool `increment`, get_reward()).
TRL runs `GRPOTrainer(environment_factory=Counter)` in its own virtualenv (~/.cache/rlhf/trl-venv, bench_vs_trl.py's,
made on first use) through scripts/trl_env_worker.py; ours runs `python -m rlhf.train env.factory=trl_env_counter:Counter`
on the same rows (a JSONL file: prompt as a message list, id, start, target). Both import the module by the same name
(its folder on PYTHONPATH), both use TRL's own Qwen2.5 ChatML template (it renders tools and tool calls, which TRL
requires; ours through data.chat_template), same model, seed, group size, token budget and learning rate; TRL gets
the rows in the order ours draws them, so step k of each side trains on the same rows.

The environment records what `reset` received and what `get_reward` returned (COUNTER_ENV_LOG). The script prints,
for each side: the environment reward's logged name and per-step values; whether the logged value is the step's
mean of get_reward() (its meaning); whether every reset received exactly the row's columns (names, values, Python
types) and whether the rows of each step match between the sides; whether each row's prompt (with the tools) renders
to the same tokens on both sides; per row, the mean reward and the tool calls the environment saw. A model that
calls no tool earns each row's fixed reward, so both sides must then log the same values step by step; once tools
are called the two samplers (vLLM here, transformers' generate in TRL) draw different completions and only the
meaning can be compared. Figures go to docs/benchmarks/trl_env_side_by_side-<date>-<model>[-example-call].json.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(EXAMPLES))

from bench_vs_trl import ensure_trl_venv, run_tree

FACTORY = "trl_env_counter:Counter"
CLASS = "Counter"


def trl_template(python: Path) -> Path:
    """TRL's Qwen2.5 template file, as installed in TRL's virtualenv (TRL recognises it, so it can parse tool calls)."""
    code = "import pathlib, trl; print(pathlib.Path(trl.__file__).parent / 'chat_templates' / 'qwen2_5.jinja')"
    return Path(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip())


def our_overrides(args, rows_file: Path, template: Path, out: Path) -> list[str]:
    return [f"model={args.model}", "data=file", f"data.path={rows_file}", "data.columns.references=null",
            f"data.chat_template={template}", "data.max_prompt_tokens=1024", "reward=base", "reward.functions=[]",
            f"env.factory={FACTORY}", f"env.max_turns={args.tool_iterations + 1}",
            f"env.max_episode_tokens={args.max_tokens}", f"rollout.max_new_tokens={args.max_tokens}",
            "rollout.temperature=0.9", "rollout.top_p=1.0", "rollout.dtype=float32", "train.bf16=false",
            f"prompts_per_step={args.prompts}",
            f"algo.group_size={args.group_size}", f"steps={args.steps}", f"train.lr={args.lr}", "algo.kl.beta=0",
            "seed=0", "eval.every=0", "checkpoint.every=0", "save_final=false", "logging.wandb_mode=disabled",
            "logging.plot=false", "logging.progress_bar=false", "preflight.enabled=false", f"output_dir={out}"]


def our_plan(overrides: list[str], model: str, steps: int, prompts: int):
    """What ours will do, computed as the driver does: the rows each step draws (ids), and each row's episode prompt
    tokens (EpisodeRunner's renderer, with the environment's tools)."""
    from transformers import AutoTokenizer

    from rlhf.agents.episodes import EpisodeRunner
    from rlhf.config import compose_config, load_config
    from rlhf.data.prompts import prompt_sets

    cfg = load_config(compose_config(*overrides))
    tokenizer = AutoTokenizer.from_pretrained(model)
    stream, _ = prompt_sets(cfg, tokenizer)
    order = [[row["id"] for row in stream.next_batch(prompts).rows] for _ in range(steps)]
    runner = EpisodeRunner(None, cfg, tokenizer)
    return order, runner, tokenizer


def records(folder: Path, side: str) -> list[dict]:
    """The environment's records of one side, in call order (per process; one process calls reset on each side)."""
    out = []
    for path in sorted(folder.glob(f"{side}-*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines()]
    return out


def reset_check(resets: list[dict], rows: dict) -> dict:
    """Did every reset receive exactly its row's columns (names, values, Python types)?"""
    expected_types = {k: type(v).__name__ for k, v in next(iter(rows.values())).items()}
    problems = []
    for r in resets:
        row = rows.get(r["kwargs"].get("id"))
        if row is None:
            problems.append(f"a reset without a known id: {sorted(r['kwargs'])}")
            continue
        extra, missing = sorted(set(r["kwargs"]) - set(row)), sorted(set(row) - set(r["kwargs"]))
        if extra or missing:
            problems.append(f"{row['id']}: extra {extra}, missing {missing}")
        changed = [k for k in row if k in r["kwargs"] and r["kwargs"][k] != row[k]]
        if changed:
            problems.append(f"{row['id']}: values differ in {changed}")
        types = {k: t for k, t in r["types"].items() if expected_types.get(k) != t}
        if types:
            problems.append(f"{row['id']}: types {types} (the row's: {[expected_types.get(k) for k in types]})")
    return {"resets": len(resets), "unchanged": not problems, "problems": sorted(set(problems)),
            "keys": sorted({k for r in resets for k in r["kwargs"]}),
            "types": sorted({f"{k}: {t}" for r in resets for k, t in r["types"].items()})}


def per_step(events: list[dict], per: int) -> list[list[dict]]:
    return [events[i:i + per] for i in range(0, len(events), per)]


def meaning_check(logged: list[float], rewards: list[dict], per: int) -> dict:
    """Is each logged value the mean of the step's get_reward() values?"""
    means = [sum(r["reward"] for r in step) / len(step) for step in per_step(rewards, per)]
    same = len(means) == len(logged) and all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(means, logged))
    formula = all(math.isclose(r["reward"], 1 / (1 + abs(r["target"] - r["value"])), abs_tol=1e-9) for r in rewards)
    return {"env_step_means": means, "logged_is_step_mean": same, "get_reward_calls": len(rewards),
            "tool_calls": sum(r["calls"] for r in rewards), "reward_is_formula": formula}


def run_trl(python, model, template, ordered_rows, args, work: Path, log_dir: Path) -> dict:
    job = {"model": model, "chat_template": str(template), "rows": ordered_rows, "module_dir": str(EXAMPLES),
           "factory": FACTORY, "prompts": args.prompts, "group_size": args.group_size,
           "max_completion_length": args.max_tokens, "max_tool_calling_iterations": args.tool_iterations,
           "lr": args.lr, "beta": 0.0, "steps": args.steps, "temperature": 0.9, "output_dir": str(work / "trl-out"),
           "result": str(work / "trl-result.json")}
    (work / "trl-job.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "",
           "COUNTER_ENV_LOG": str(log_dir), "COUNTER_ENV_SIDE": "trl"}
    env.pop("PYTHONPATH", None)
    started = time.monotonic()
    run_tree([str(python), str(REPO / "scripts" / "trl_env_worker.py"), str(work / "trl-job.json")], env,
             work / "trl.log")
    result = json.loads((work / "trl-result.json").read_text())
    result["seconds"] = time.monotonic() - started
    return result


def run_ours(overrides: list[str], out: Path, work: Path, log_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(COUNTER_ENV_LOG=str(log_dir), COUNTER_ENV_SIDE="ours",
               PYTHONPATH=os.pathsep.join(p for p in [str(EXAMPLES), env.get("PYTHONPATH")] if p))
    started = time.monotonic()
    run_tree([sys.executable, "-m", "rlhf.train", *overrides, f"hydra.run.dir={out}"], env, work / "ours.log")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"history": history, "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--example-call", action="store_true",
                        help="prompts show a tool call (small models then sometimes call the tool)")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48,
                        help="an episode's tokens after the prompt (TRL's max_completion_length; ours: "
                             "env.max_episode_tokens and rollout.max_new_tokens)")
    parser.add_argument("--tool-iterations", type=int, default=3,
                        help="TRL's max_tool_calling_iterations; ours: env.max_turns = this + 1")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "trl_env_side_by_side")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: docs/benchmarks/trl_env_side_by_side-<date>-<model>[-example-call].json")
    args = parser.parse_args()
    if args.out is None:
        tail = "-example-call" if args.example_call else ""
        args.out = REPO / "docs" / "benchmarks" / f"trl_env_side_by_side-{time.strftime('%Y%m%d')}-{args.model}{tail}.json"

    import trl_env_counter

    from rlhf.models import resolve_model_path

    python = ensure_trl_venv()
    template = trl_template(python)
    model = str(resolve_model_path(args.model, None))
    shutil.rmtree(args.work, ignore_errors=True)
    log_dir = args.work / "env-records"
    log_dir.mkdir(parents=True)
    rows = trl_env_counter.rows(args.rows, args.data_seed, args.example_call)
    by_id = {r["id"]: r for r in rows}
    rows_file = args.work / "rows.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))

    ours_out = args.work / "ours"
    overrides = our_overrides(args, rows_file, template, ours_out)
    order, runner, tokenizer = our_plan(overrides, model, args.steps, args.prompts)
    ordered = [by_id[i] for step in order for i in step]  # TRL does not shuffle (shuffle_dataset=False)

    print(f"model {model}; template {template}; rows {rows_file}; steps draw {order}", flush=True)
    ours = run_ours(overrides, ours_out, args.work, log_dir)
    print(f"ours done in {ours['seconds']:.0f} s", flush=True)
    trl = run_trl(python, model, template, ordered, args, args.work, log_dir)
    print(f"TRL done in {trl['seconds']:.0f} s", flush=True)

    per = args.prompts * args.group_size
    sides = {}
    for side in ("ours", "trl"):
        events = records(log_dir, side)
        resets = [e for e in events if e["event"] == "reset"]
        rewards = [e for e in events if e["event"] == "reward"]
        if side == "ours":
            name = f"reward/{CLASS}"
            lines = [h for h in ours["history"] if name in h]
            logged = [h[name] for h in lines]
            reward_names = sorted(k for k in ours["history"][0] if k.startswith("reward/"))
            tool_calls = {k: [h.get(k) for h in lines] for k in ("rollout/tool_calls", "rollout/tool_errors")}
        else:
            name = f"rewards/{CLASS}/mean"
            lines = [line for line in trl["logs"] if name in line]
            logged = [line[name] for line in lines]
            reward_names = sorted({k for line in trl["logs"] for k in line if k.startswith("rewards/")})
            tool_calls = {k: [line.get(k) for line in lines] for k in ("tools/call_frequency",
                                                                         "tools/failure_frequency")}
        steps_rows = [sorted({r["kwargs"]["id"] for r in step}) for step in per_step(resets, per)]
        per_row = {rid: [r for r in rewards if r["id"] == rid] for rid in by_id}
        sides[side] = {"reward_name": name, "reward_names": reward_names, "per_step": logged,
                       "logged_tool_metrics": tool_calls,
                       "env_tool_calls_per_step": [sum(r["calls"] for r in step) for step in per_step(rewards, per)],
                       "per_row": {rid: {"mean_reward": sum(r["reward"] for r in rs) / len(rs) if rs else None,
                                         "episodes": len(rs), "tool_calls": sum(r["calls"] for r in rs),
                                         "final_values": [r["value"] for r in rs]} for rid, rs in per_row.items()}, "meaning": meaning_check(logged, rewards, per),
                       "reset": reset_check(resets, by_id), "rows_per_step": steps_rows, "seconds": ours["seconds"]
                       if side == "ours" else trl["seconds"]}
    sides["trl"]["reward_func_names"] = trl["reward_func_names"]
    sides["trl"]["reward_weights"] = trl["reward_weights"]
    sides["trl"]["tools"] = trl["tools"]
    sides["trl"]["training_template_swapped"] = trl["training_template_swapped"]
    sides["trl"]["versions"] = trl["versions"]

    prompt_diffs = []
    for rid, row in by_id.items():
        ours_ids = runner.renderer.prompt(row["prompt"], runner.schemas[None])
        trl_ids = trl["prompts"][rid]["ids"]
        if list(ours_ids) != list(trl_ids):
            prompt_diffs.append({"id": rid, "ours": tokenizer.decode(ours_ids), "trl": trl["prompts"][rid]["text"]})
    same_rows = sides["ours"]["rows_per_step"] == sides["trl"]["rows_per_step"]
    expected_order = [sorted(step) for step in order]
    summary = {"both_ran": bool(sides["ours"]["per_step"]) and bool(sides["trl"]["per_step"]),
               "same_rows_per_step": same_rows, "rows_per_step_as_planned": sides["ours"]["rows_per_step"] ==
               expected_order, "prompts_render_identically": not prompt_diffs,
               "per_step_reward_equal": sides["ours"]["per_step"] == sides["trl"]["per_step"] or all(
                   math.isclose(a, b, abs_tol=1e-6) for a, b in zip(sides["ours"]["per_step"],
                                                                     sides["trl"]["per_step"]))}

    print(f"\nenvironment {FACTORY}, model {args.model}, {args.steps} steps x {args.prompts} prompts x "
          f"{args.group_size} episodes")
    for side, s in sides.items():
        print(f"{side:>4}: logged as {s['reward_name']!r} (reward keys {s['reward_names']}): "
              f"{[round(v, 4) for v in s['per_step']]}")
        print(f"      tool calls the environment saw per step {s['env_tool_calls_per_step']}; logged tool metrics "
              f"{s['logged_tool_metrics']}")
        print(f"      logged = the step's mean of get_reward(): {s['meaning']['logged_is_step_mean']} "
              f"({s['meaning']['get_reward_calls']} calls, {s['meaning']['tool_calls']} tool calls in all)")
        print(f"      reset got the row's columns unchanged: {s['reset']['unchanged']} ({s['reset']['resets']} resets; "
              f"keys {s['reset']['keys']}; types {s['reset']['types']})")
        for problem in s["reset"]["problems"][:10]:
            print(f"        {problem}")
    print(f"same rows at each step: {same_rows}; prompts with tools render to the same tokens: {not prompt_diffs}"
          + (f" (differ for {[d['id'] for d in prompt_diffs]})" if prompt_diffs else ""))
    print(f"per-step environment reward equal on both sides: {summary['per_step_reward_equal']}")
    print("per row (mean reward, tool calls): " + "; ".join(
        f"{rid} ours {sides['ours']['per_row'][rid]['mean_reward']:.3f}/{sides['ours']['per_row'][rid]['tool_calls']} "
        f"TRL {sides['trl']['per_row'][rid]['mean_reward']:.3f}/{sides['trl']['per_row'][rid]['tool_calls']}"
        for rid in by_id))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "settings": settings, "model": model,
                                    "template": str(template), "factory": FACTORY, "rows": rows,
                                    "ours_overrides": overrides, "planned_rows_per_step": order, "summary": summary,
                                    "sides": sides, "prompt_differences": prompt_diffs}, indent=1))
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
