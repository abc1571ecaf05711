"""Generated tokens per second of a rollout engine on the default model and prompts, by dtype and threads.

    python scripts/bench_generation.py --dtype float32 --threads 2
    python scripts/bench_generation.py --prompts 8 --samples 4 --max-new-tokens 32 --block-size 128
    python scripts/bench_generation.py --engine hf --dtype bfloat16 --threads 1 --prompts 8 --samples 4

Each setting runs in its own process (vLLM binds its threads at start-up). Prints one line per repeat and the
median; the first repeat includes warm-up.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(args) -> None:
    sys.path.insert(0, str(REPO))
    from rlhf.data.sources import reasoning_gym_rows
    from rlhf.engines.base import SamplingSettings
    from rlhf.models import resolve_model_path

    from rlhf.engines.base import EngineSettings

    model = resolve_model_path("smollm2")
    settings = EngineSettings(dtype=args.dtype, max_model_len=1024, kv_cache_gib=1.0, block_size=args.block_size,
                              gpu_memory_utilization=0.5, sleep_mode=False, weight_transfer=None)
    if args.engine == "vllm":
        from rlhf.engines.vllm_engine import VLLMEngine

        engine = VLLMEngine(model, settings, seed=0)
    else:
        from rlhf.engines.hf_engine import HFEngine

        engine = HFEngine(model, settings, seed=0)
    tok = engine.tokenizer
    rows = reasoning_gym_rows("gsm_symbolic", args.prompts, seed=0)
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                           add_generation_prompt=True), add_special_tokens=False)["input_ids"]
               for r in rows]
    rates = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        groups = engine.generate(prompts, args.samples, SamplingSettings(args.max_new_tokens, 0.9, 1.0))
        seconds = time.perf_counter() - start
        tokens = sum(len(s.completion_ids) for g in groups for s in g)
        rates.append(tokens / seconds)
        print(f"repeat {repeat}: {tokens} tokens in {seconds:.1f} s = {rates[-1]:.0f} tokens/s", flush=True)
    print(json.dumps({"engine": args.engine, "dtype": args.dtype, "threads": args.threads, "prompts": args.prompts,
                      "samples": args.samples, "median_tokens_per_s": round(statistics.median(rates[1:] or rates), 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=None, help="vLLM KV-cache block (default: rollout.block_size)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.block_size is None:
        sys.path.insert(0, str(REPO))
        from rlhf.config import compose_config

        args.block_size = compose_config("output_dir=/tmp/unused").rollout.block_size
    if args.child:
        measure(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    # the resolved block size goes along, so the child does not compose the config again
    subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:], "--block-size", str(args.block_size)], env=env,
                   check=True)


if __name__ == "__main__":
    main()
