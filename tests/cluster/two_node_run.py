"""Run by test_two_nodes.py in a process of its own (the test session holds its own Ray instance): a two-node Ray
cluster on this machine, a split run with the engine on one node and the learner on the other, an engine killed
mid-run. Prints one JSON line: what the run did."""

import json
import logging
import shutil
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "rlhf"), str(REPO / "tests")]

from test_driver import config, run_killing_engine_0  # noqa: E402


def main(tiny_model: str, tmp: Path) -> None:
    records = []
    logging.getLogger("actors.weight_sync").addHandler(Handler(records))
    logging.getLogger("actors.weight_sync").setLevel(logging.INFO)
    temp_dir = f"/tmp/rlhf-two-nodes-{tmp.name[-8:]}"  # Ray's socket paths must stay short
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "temp_dir": temp_dir})
    cluster.add_node(num_cpus=2)  # two CPUs each: the engine and the learner (1.5 CPUs each) cannot share a node
    try:
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}})
        sync_dir = tmp / "sync"
        sync_dir.mkdir()
        cfg = config(tiny_model, tmp, "placement=split", "steps=4", "rollout.engine=hf", "rollout.num_cpus=1.5",
                     "train.num_cpus=1.5", "placement.timeout_s=60", "algo.kl.beta=0", f"rollout.sync_dir={sync_dir}",
                     "checkpoint.every=0", "save_final=false", "logging.wandb_mode=disabled")
        metrics = tmp / "run" / "metrics.jsonl"
        killed = run_killing_engine_0(cfg, metrics)
        reports = {r["role"]: r["node"] for r in json.loads((tmp / "run" / "preflight.json").read_text())}
        print(json.dumps({"history": [json.loads(line) for line in metrics.read_text().splitlines()],
                          "nodes": reports, "routes": records, "killed": killed,
                          "sync_dir": [p.name for p in sync_dir.iterdir()]}))
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


class Handler(logging.Handler):
    def __init__(self, records):
        super().__init__()
        self.records = records

    def emit(self, record):
        self.records.append(record.getMessage())


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
