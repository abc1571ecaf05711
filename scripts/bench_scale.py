"""Scale figures on a two-node Ray cluster started on this machine: the driver's CPU time per step and the weight
push time, as engines and learner ranks are added.

    python scripts/bench_scale.py                                   # 1, 2, 4 engines x 1, 2 ranks, tiny model
    python scripts/bench_scale.py --engines 1 2 --ranks 1 --model smollm2 --steps 3

Two raylets (`ray.cluster_utils.Cluster`, one CPU each) stand for two nodes; `placement=split` spreads the engines
and the learner ranks over them, and `rollout.weight_sync=auto` picks the object-store route when an engine sits
on another node than learner rank 0 (it says which in the output). Every setting is a fresh run in this process
(`rlhf.driver.run`), 1 prompt per engine per step, synchronous pushes. Prints, per setting: median seconds per step,
the driver's CPU seconds per step (`time/driver_cpu`), the median push (`time/weight_sync`) and the route. Both
nodes share this machine's two cores and memory, so the figures show how the driver and the push grow with the
actor count, not what two real nodes would do. Figures also go to outputs/bench_scale/<time>.json.
"""

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Routes(logging.Handler):
    def __init__(self):
        super().__init__()
        self.chosen = []

    def emit(self, record):
        self.chosen.append(record.getMessage().removeprefix("weight sync: "))


def run(engines: int, ranks: int, model: str, steps: int, warmup: int, out: Path, routes: Routes) -> dict:
    from rlhf.config import compose_config, load_config
    from rlhf.driver import run as train

    prompts = engines
    cfg = load_config(compose_config(
        "experiment=smoke", f"model={model}", "placement=split", "rollout.engine=hf", f"rollout.engines={engines}",
        f"train.ranks={ranks}", "rollout.threads=1", "train.threads=1", "rollout.num_cpus=0", "train.num_cpus=0",
        f"prompts_per_step={prompts}", "algo.group_size=2", f"train.micro_batch_size={2 * prompts // ranks}",
        "algo.kl.beta=0", "rollout.max_new_tokens=16", f"data.size={prompts * (steps + warmup)}",
        f"steps={steps + warmup}", "checkpoint.every=0", "save_final=false", "logging.wandb_mode=disabled",
        "logging.plot=false", "logging.progress_bar=false", "preflight.enabled=false", "eval.every=0",
        f"output_dir={out}"))
    routes.chosen.clear()
    train(cfg)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][warmup:]
    median = {key: statistics.median(h[key] for h in history) for key in ("time/step", "time/driver_cpu",
                                                                           "time/weight_sync")}
    return {"engines": engines, "ranks": ranks, "model": model, "route": routes.chosen[-1] if routes.chosen else "?",
            "seconds_per_step": median["time/step"], "driver_cpu_seconds": median["time/driver_cpu"],
            "push_seconds": median["time/weight_sync"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--model", default="tiny", choices=["tiny", "smollm2"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_scale")
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    routes = Routes()
    logging.getLogger("actors.weight_sync").addHandler(routes)
    logging.getLogger("actors.weight_sync").setLevel(logging.INFO)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    temp_dir = tempfile.mkdtemp(prefix="rlhf-scale-", dir="/tmp")  # short: Ray's socket paths
    store = 2 * 1024**3  # per node: room for a few pushes of the default model (540 MB each)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "temp_dir": temp_dir,
                                                             "object_store_memory": store})
    cluster.add_node(num_cpus=1, object_store_memory=store)
    ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    path, results = args.out / f"{stamp}.json", []
    try:
        for ranks in args.ranks:
            for engines in args.engines:
                result = run(engines, ranks, args.model, args.steps, args.warmup,
                             args.out / stamp / f"e{engines}-r{ranks}", routes)
                results.append(result)
                path.write_text(json.dumps(results, indent=1))
                print(f"{engines} engine(s), {ranks} rank(s), {args.model}: {result['seconds_per_step']:.2f} s/step, "
                      f"driver CPU {result['driver_cpu_seconds']:.3f} s/step, push {result['push_seconds']:.3f} s "
                      f"({result['route']})", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    print(f"figures: {path}")


if __name__ == "__main__":
    main()
