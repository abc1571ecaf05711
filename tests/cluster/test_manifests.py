"""The cluster files cannot run here (no SSH peers, no Kubernetes); check they parse and say what they must."""

import shlex

import yaml

from conftest import REPO
from rlhf.config import compose_config, load_config


def test_cluster_launcher_config_installs_the_project_on_every_node():
    config = yaml.safe_load((REPO / "cluster" / "ray-cluster.yaml").read_text())
    assert {"cluster_name", "provider", "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"} <= set(config)
    assert any("scripts/install.sh" in c for c in config["setup_commands"])


def test_rayjob_entrypoint_is_a_valid_run_of_ours():
    job = yaml.safe_load((REPO / "cluster" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "rlhf.train"]
    overrides = [w for w in words[3:] if not w.startswith("hydra.")]
    cfg = load_config(compose_config(*overrides))  # every override names a real key with a valid value
    assert cfg.placement.layout == "split" and cfg.resume == "auto"
