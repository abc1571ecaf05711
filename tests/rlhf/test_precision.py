"""The CPU roles' precision, chosen by a probe of this CPU (mocked here: the choice, not the chip, is under test)."""

import json

import pytest
import torch
from transformers import LlamaConfig

from rlhf import precision
from rlhf.config import compose_config, load_config
from rlhf.console import startup_summary


@pytest.fixture
def timings(monkeypatch):
    """The probe's timings, set by the test; every measurement counted."""
    measured = {"fp32": 0.10, "bf16": 0.05, "calls": 0}

    def fake(hidden, intermediate, threads, dtype, repeats=5):
        measured["calls"] += 1
        return measured["fp32" if dtype == torch.float32 else "bf16"]

    monkeypatch.setattr(precision, "time_matmuls", fake)
    return measured


def model_folder(tmp_path, hidden):
    LlamaConfig(hidden_size=hidden, intermediate_size=3 * hidden).save_pretrained(tmp_path / f"model-{hidden}")
    return str(tmp_path / f"model-{hidden}")


def config(*overrides):
    return load_config(compose_config("output_dir=/tmp/unused", *overrides))


def test_bf16_where_the_probe_finds_it_faster_fp32_where_slower(tmp_path, timings):
    model = model_folder(tmp_path, 576)
    cfg, why = precision.resolve_precision(config("algo=ppo"), model, tmp_path / "faster.json")
    assert cfg.train.bf16 is True and cfg.critic.bf16 is True and cfg.rollout.dtype == "bfloat16"
    assert why.startswith("bf16 on the CPU") and "100.0 ms in fp32, 50.0 ms in bf16 (2.00x" in why
    timings.update(bf16=0.2)
    cfg, why = precision.resolve_precision(config(), model, tmp_path / "slower.json")
    assert cfg.train.bf16 is False and cfg.rollout.dtype == "float32" and why.startswith("fp32 on the CPU")
    timings.update(bf16=0.095)  # within the margin: a tie keeps fp32
    assert precision.resolve_precision(config(), model, tmp_path / "tie.json")[0].train.bf16 is False


def test_the_probe_is_cached_per_cpu_torch_shape_and_threads(tmp_path, timings):
    model, cache = model_folder(tmp_path, 576), tmp_path / "precision.json"
    precision.resolve_precision(config(), model, cache)
    assert timings["calls"] == 2  # fp32 and bf16, measured once...
    timings.update(bf16=0.5)  # ...and read back after: a changed timing is not measured again
    assert precision.resolve_precision(config(), model, cache)[0].train.bf16 is True and timings["calls"] == 2
    [key] = json.loads(cache.read_text())
    assert precision.cpu_model() in key and torch.__version__ in key and "576x1728" in key and "2 threads" in key
    precision.resolve_precision(config("train.threads=1"), model, cache)  # another thread count: measured
    assert timings["calls"] == 4


def test_a_setting_the_config_makes_is_kept_and_gpu_roles_are_not_probed(tmp_path, timings):
    model = model_folder(tmp_path, 576)
    cfg, why = precision.resolve_precision(config("train.bf16=false", "critic.bf16=false", "rollout.dtype=float32"),
                                           model, tmp_path / "p.json")
    assert why is None and timings["calls"] == 0 and cfg.train.bf16 is False
    cfg, why = precision.resolve_precision(config("train.bf16=false"), model, tmp_path / "p.json")
    # the engine follows the learner's own choice, not the probe's (none is run), and the summary says so
    assert cfg.rollout.dtype == "float32" and timings["calls"] == 0
    assert startup_summary(cfg, {}, "shm", why).splitlines()[-1] == (
        "precision: fp32 as set; the engine follows the learner (train.bf16=False, rollout.dtype=float32)")
    cfg, why = precision.resolve_precision(config("train.bf16=false", "algo=ppo"), model, tmp_path / "p.json")
    assert cfg.critic.bf16 is True and cfg.rollout.dtype == "float32"  # the critic's choice is open: measured
    cfg, _ = precision.resolve_precision(config("train.num_gpus=1", "critic.num_gpus=1", "rollout.num_gpus=1"),
                                         model, tmp_path / "p.json")
    assert cfg.train.bf16 is None and cfg.rollout.dtype == "auto"  # on a GPU: bf16 there, as before


def test_a_tiny_model_stays_fp32_unprobed_and_the_summary_says_why(tmp_path, timings):
    cfg, why = precision.resolve_precision(config(), model_folder(tmp_path, 64), tmp_path / "p.json")
    assert cfg.train.bf16 is False and cfg.rollout.dtype == "float32" and timings["calls"] == 0
    summary = startup_summary(cfg, {}, "shm", why)
    assert summary.splitlines()[-1] == ("precision: fp32 on the CPU: the model is too small (hidden size under 256) "
                                        "for bf16 to gain (train.bf16=False, rollout.dtype=float32)")
