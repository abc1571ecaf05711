"""Run by test_two_nodes.py in a process of its own (the test session holds its own Ray instance): a two-node Ray
cluster on this machine, a split run with the engine on one node and the learner on the other, an engine killed
mid-run. Prints one JSON line: what the run did."""

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "rlhf"), str(REPO / "tests")]

from test_driver import config, run_killing  # noqa: E402


def main(tiny_model: str, tmp: Path) -> None:
    records = []
    logging.getLogger("actors.weight_sync").addHandler(Handler(records))
    logging.getLogger("actors.weight_sync").setLevel(logging.INFO)
    temp_dir = f"/tmp/rlhf-two-nodes-{tmp.name[-8:]}"  # Ray's socket paths must stay short
    # Ray's test cluster writes its address into <RAY_TMPDIR>/ray, which it does not create (a fresh machine has no
    # /tmp/ray): keep it inside the folder removed at the end
    os.environ["RAY_TMPDIR"] = temp_dir
    os.makedirs(os.path.join(temp_dir, "ray"), exist_ok=True)
    cluster = None
    try:
        # two CPUs each: the engine and the learner (1.5 CPUs each) cannot share a node; four declared GPUs each
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 4, "temp_dir": temp_dir})
        cluster.add_node(num_cpus=2, num_gpus=4)
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}})
        split_8gpu = nodes_of_every_actor("split_8gpu", "algo=ppo")
        sync_dir = tmp / "sync"
        sync_dir.mkdir()
        cfg = config(tiny_model, tmp, "placement=split", "steps=4", "rollout.engine=hf", "rollout.num_cpus=1.5",
                     "train.num_cpus=1.5", "placement.timeout_s=60", "algo.kl.beta=0", f"rollout.sync_dir={sync_dir}",
                     "checkpoint.every=0", "save_final=false", "logging.wandb_mode=disabled")
        metrics = tmp / "run" / "metrics.jsonl"
        killed = run_killing(cfg, "rollout-0-")
        reports = {r["role"]: r["node"] for r in json.loads((tmp / "run" / "preflight.json").read_text())}
        print(json.dumps({"history": [json.loads(line) for line in metrics.read_text().splitlines()],
                          "nodes": reports, "routes": records, "killed": killed, "split_8gpu": split_8gpu,
                          "sync_dir": [p.name for p in sync_dir.iterdir()]}))
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@ray.remote(num_cpus=0)
class Probe:
    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def nodes_of_every_actor(preset: str, *overrides: str) -> dict[str, list[str]]:
    """{role: the node of each of its actors} for a placement preset, placed exactly as launch_actors places them
    (probe actors with each role's GPU share; CPUs set to 0, the nodes having 2)."""
    from actors.launch import role_demands
    from actors.placement import Placement
    from rlhf.config import compose_config, load_config

    free_cpus = [f"{role}.num_cpus=0" for role in ("rollout", "train", "reference", "critic")]
    cfg = load_config(compose_config(f"placement={preset}", "output_dir=/tmp/x", *free_cpus, *overrides))
    demands = role_demands(cfg, True)
    p = cfg.placement
    placement = Placement(p.layout, demands, 60, p.bundles, dict(p.beside), p.role_strategy)
    try:
        probes = {role: [Probe.options(num_gpus=d.num_gpus, scheduling_strategy=placement.strategy(role, i)).remote()
                         for i in range(d.count)] for role, d in demands.items()}
        return {role: ray.get([probe.node.remote() for probe in actors]) for role, actors in probes.items()}
    finally:
        placement.remove()


class Handler(logging.Handler):
    def __init__(self, records):
        super().__init__()
        self.records = records

    def emit(self, record):
        self.records.append(record.getMessage())


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
