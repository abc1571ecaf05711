"""algo=sft through the actor stack (policy learner actor, DeepSpeed, checkpoints; with eval a rollout engine and
the BLEU reward): the loss falls on a tiny memorisation set, the held-out figures are logged, a resume continues
identically, two ZeRO-3 ranks train as one."""

import json
from pathlib import Path
from unittest import mock

import pytest
import ray

from rlhf.config import compose_config, load_config
from rlhf.driver import run

pytestmark = pytest.mark.integration


def write_memo(path: Path, rows: int = 16) -> Path:
    """Conversations a tiny random model can memorise: two assistant turns of a's."""
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"Repeat the letter a, request {i}."},
                {"role": "assistant", "content": "a a a a a a"},
                {"role": "user", "content": "Again."},
                {"role": "assistant", "content": "a a a a a a a a"}]}) + "\n")
    return path


def config(tiny_model, tmp_path, *overrides, out="run"):
    return load_config(compose_config(
        "algo=sft", "model=path", f"model.path={tiny_model}", "data=file",
        f"data.path={write_memo(tmp_path / 'memo.jsonl')}", "sft.batch_size=8", "train.lr=1e-2",
        "train.max_tokens_per_micro_batch=256", "rollout.max_new_tokens=48", "logging.progress_bar=false",
        f"output_dir={tmp_path / out}", *overrides))


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def kill_the_engine_after(step: int):
    """SftTrainer.learn that, once step `step` has trained, kills the engine as a crash would and waits until Ray has
    seen it die (Ray restarts it; its engine starts only when the run asks)."""
    from rlhf.sft.trainer import SftTrainer
    from tests_ray_helpers import actor_state, wait_until

    learn, trained = SftTrainer.learn, []

    def learn_then_kill(self, indices):
        metrics = learn(self, indices)
        trained.append(indices)
        if len(trained) == step + 1:  # steps 0..step have trained
            engine = self.actors.rollouts[0]
            ray.kill(engine, no_restart=False)
            wait_until(lambda: actor_state(engine)["NumRestarts"] >= 1, "the engine's death seen by Ray")
        return metrics

    return mock.patch.object(SftTrainer, "learn", learn_then_kill)


def test_sft_memorises_a_tiny_set_and_evaluates_on_the_engines(ray_cluster, tiny_model, tmp_path, caplog):
    # the HF engine (~10 s sooner to start on the tiny model; the weights reach vLLM the same way, tests/actors).
    # The engine dies after step 3: the evaluation of step 6 is skipped (logged), the next waits for its restart and
    # pushes the weights again
    with kill_the_engine_after(3), caplog.at_level("WARNING"):
        run(config(tiny_model, tmp_path, "steps=12", "eval.every=6", "eval.held_out=4", "checkpoint.every=100",
                   "rollout.engine=hf"))
    assert "step 6: evaluation skipped: an engine or reward actor died or is restarting" in caplog.text
    out = tmp_path / "run"
    history = records(out)
    steps = [h for h in history if "sft/loss" in h]
    assert [h["step"] for h in steps] == list(range(12)) and all(h["phase"] == "sft" for h in history)
    losses = [h["sft/loss"] for h in steps]
    assert losses[-1] < 0.3 * losses[0], losses
    assert steps[-1]["sft/token_accuracy"] > steps[0]["sft/token_accuracy"]
    # each step: 8 demonstrations of 16 target tokens (6 and 8 a's, each turn's stop token), within the budget
    assert all(h["sft/tokens"] == 8 * (6 + 1 + 8 + 1) for h in steps) and all(0 <= h["sft/padding"] < 0.5 for h in steps)
    evals = [h for h in history if "eval/nll" in h]
    assert [h["step"] for h in evals] == [0, 6, 12] and "eval/bleu" not in evals[1]  # step 6: the learner's only
    assert evals[-1]["eval/nll"] < 0.3 * evals[0]["eval/nll"]
    assert evals[-1]["eval/bleu"] > evals[0]["eval/bleu"]  # generated on the restarted engine with the pushed weights
    # no reference, reward-model or critic actor: the policy, the engine and the scorer of its completions
    assert sorted(p.name for p in (out / "logs").glob("*.log") if p.name != "driver.log") == \
        ["policy-0.log", "reward-0.log", "rollout-0.log"]
    assert (out / "final" / "config.json").exists() and (out / "reward_curve.png").exists()
    # the memory pre-flight of an RL run: every role's peak, the policy's at the heaviest SFT micro-batch
    reports = {r["role"]: r for r in json.loads((out / "preflight.json").read_text())}
    assert set(reports) == {"policy rank 0", "rollout", "reward functions", "driver"}
    assert all(r["peak_gib"] > 0.1 for r in reports.values())


def test_an_sft_resume_continues_identically(ray_cluster, tiny_model, tmp_path):
    common = ["eval.every=0", "checkpoint.every=2", "checkpoint.keep_last=3", "save_final=false",
              "logging.wandb_mode=disabled"]
    run(config(tiny_model, tmp_path, "steps=5", *common, out="whole"))
    run(config(tiny_model, tmp_path, "steps=3", *common, out="parts"))  # checkpoints after steps 1 and 2
    assert sorted(p.name for p in (tmp_path / "parts" / "checkpoints").iterdir()) == ["step-000001", "step-000002"]
    run(config(tiny_model, tmp_path, "steps=5", "resume=auto", *common, out="parts"))
    whole, parts = records(tmp_path / "whole"), records(tmp_path / "parts")
    keys = ["sft/loss", "sft/token_accuracy", "sft/tokens", "sft/input_tokens", "grad_norm", "lr"]
    assert [[h[k] for k in keys] for h in parts] == [[h[k] for k in keys] for h in whole]
    assert [h["step"] for h in parts] == list(range(5))
    # two DeepSpeed ranks under ZeRO-3 (each a share of the micro-batches, parameters sharded) train as one rank does
    run(config(tiny_model, tmp_path, "steps=5", *common, "train.ranks=2", "train.zero_stage=3", "train.num_cpus=0.5",
               out="zero3"))
    sharded = records(tmp_path / "zero3")
    assert [h["sft/loss"] for h in sharded] == pytest.approx([h["sft/loss"] for h in whole], rel=1e-4)
    assert [h["sft/tokens"] for h in sharded] == [h["sft/tokens"] for h in whole]
