import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    from rlhf.models.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A Ray instance of the tests' own: own temp dir and ports, stopped at the end (never `ray stop`)."""
    import ray

    # short path: Ray's socket paths must fit in 107 bytes
    temp_dir = Path("/tmp") / f"rlhf-test-ray-{os.getpid()}"
    # 8 declared GPUs (none exists): GPU placement is exercised, the actors compute on the CPU
    ray.init(address="local", num_cpus=2, num_gpus=8, include_dashboard=False, _temp_dir=str(temp_dir),
             runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}})
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)
