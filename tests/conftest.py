import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# What the suite's processes leave in the system's temporary folder (wandb's media and artifact folders, Ray's session
# folders of the runs started as subprocesses, multiprocessing's) goes into one folder of the suite's own, removed at
# the end. Short: Ray puts socket paths under it (at most 107 bytes).
SUITE_TMP = Path(tempfile.mkdtemp(prefix="rlhf-tests-", dir="/tmp"))
os.environ["TMPDIR"] = str(SUITE_TMP)
tempfile.tempdir = None  # read TMPDIR again


def pytest_unconfigure(config):
    """The folder goes at the end of every pytest session, one that only collects or stops early too."""
    shutil.rmtree(SUITE_TMP, ignore_errors=True)


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


# One conftest only: a second one (say tests/rlhf/agents/conftest.py) would be imported under the same module name
# `conftest`, and `from conftest import REPO` would then find whichever came first.
@pytest.fixture(scope="module")
def engine(ray_cluster, tiny_model):
    """A real engine for the agents' tests: the HF engine on the tiny model, in a Ray actor of its own."""
    import ray
    from types import SimpleNamespace

    from rlhf.engines.base import EngineSettings
    from actors.rollout import RolloutActor

    settings = EngineSettings(dtype="auto", max_model_len=1024, kv_cache_gib=0.1, block_size=32,
                              gpu_memory_utilization=0.3, sleep_mode=False, weight_transfer=None)
    actor = RolloutActor.options(num_cpus=0).remote("hf", tiny_model, settings, 0)
    yield SimpleNamespace(rollouts=[actor])
    ray.kill(actor)
