"""Start-up cost of the prompt data at scale: time to the first batch, cold and cached, the driver's peak memory, and
the cost of a draw, on a generated JSONL of GSM-length prompts (issue 26).

    python scripts/bench_data.py                         # 1M rows, this checkout
    python scripts/bench_data.py --rows 200000 --repo /abs/other-checkout   # the same measurement of another version

Each measurement runs in a process of its own (`--measure`): load_rows + PromptStream with SmolLM2's tokenizer and
chat template, then one batch of 8; "cold" with empty caches (a fresh HF_DATASETS_CACHE and RLHF_CACHE), "cached"
again with the same caches. Peak memory is the process's own high-water mark (ru_maxrss) and that of its children
(the tokenizing processes). Prints one line per measurement and writes outputs/bench_data/<time>.json.
"""

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = ("Natalia sold clips to her friends in April and then she sold half as many clips in May how many did she "
         "sell altogether a store has apples oranges and pears each crate holds twelve pieces of fruit").split()


def generate(path: Path, rows: int) -> None:
    """GSM-length prompts (~100 words, ~600 bytes) with a reference each."""
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(rows):
            question = " ".join(rng.choice(WORDS) for _ in range(100)) + f" ({i})?"
            f.write(json.dumps({"prompt": question, "references": [f"The answer is {i}."]}) + "\n")


def measure(repo: str, data: str, model: str) -> dict:
    sys.path.insert(0, repo)
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from rlhf.data import PromptStream, load_rows

    cfg = SimpleNamespace(source="file", path=data, task=None, size=None, seed=0, bad_rows="error",
                          columns={"prompt": "prompt", "references": "references", "answer": None})
    started = time.perf_counter()
    stream = PromptStream(load_rows(cfg), AutoTokenizer.from_pretrained(model), None, 1024, seed=0)
    stream.next_batch(8)
    first_batch = time.perf_counter() - started
    draws = time.perf_counter()
    for _ in range(100):
        stream.next_batch(8)
    draw = (time.perf_counter() - draws) / 100
    gib = 1024**2  # ru_maxrss is in KiB
    return {"seconds_to_first_batch": first_batch, "seconds_per_draw_of_8": draw,
            "driver_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / gib,
            "children_peak_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / gib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose rlhf.data is measured")
    parser.add_argument("--measure", nargs=3, metavar=("REPO", "DATA", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_data")
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    sys.path.insert(0, str(REPO))
    from rlhf.models import resolve_model_path

    model = resolve_model_path("smollm2", None)
    work = Path(tempfile.mkdtemp(prefix="rlhf-bench-data-"))
    try:
        data = work / f"prompts-{args.rows}.jsonl"
        generate(data, args.rows)
        print(f"{args.rows} rows, {data.stat().st_size / 1e6:.0f} MB", flush=True)
        env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf"), "RLHF_CACHE": str(work / "rlhf"),
               "HF_HUB_OFFLINE": "1"}
        commit = subprocess.run(["git", "-C", args.repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        results = {"rows": args.rows, "commit": commit or "unknown"}  # the measured version (no path of this machine)
        for run in ("cold", "cached"):
            out = subprocess.run([sys.executable, __file__, "--measure", args.repo, str(data), model], env=env,
                                 capture_output=True, text=True, check=True)
            results[run] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[run]
            print(f"{run:>6}: {r['seconds_to_first_batch']:.1f} s to the first batch, driver peak "
                  f"{r['driver_peak_gib']:.2f} GiB (tokenizing processes {r['children_peak_gib']:.2f}), "
                  f"{r['seconds_per_draw_of_8'] * 1e3:.2f} ms per draw of 8", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
