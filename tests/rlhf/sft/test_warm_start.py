"""A warm start inside an RL run: SFT steps on the same learner, then GRPO from those weights, pushed to the engine;
the reference is the warm-started policy. Both phases in metrics.jsonl."""

import json

import pytest

from rlhf.config import compose_config, load_config
from rlhf.driver import run

pytestmark = pytest.mark.integration


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rl_starts_from_the_warm_started_policy(ray_cluster, tiny_model, tmp_path):
    task = write(tmp_path / "task.jsonl", [{"prompt": f"Repeat the letter a, request {i}.",
                                           "references": ["a a a a a a a a a a"]} for i in range(16)])
    demos = write(tmp_path / "demos.jsonl", [{"prompt": f"Repeat the letter a, request {i}.",
                                             "completion": "a a a a a a a a a a"} for i in range(16)])
    cfg = load_config(compose_config(
        "model=path", f"model.path={tiny_model}", "data=file", f"data.path={task}", "prompts_per_step=2",
        "algo.group_size=4", "rollout.max_new_tokens=12", "train.lr=1e-3", "train.micro_batch_size=8",
        "algo.kl.beta=0.01", "steps=2", "eval.every=2", "eval.held_out=2", "logging.progress_bar=false",
        "sft.steps=6", "sft.lr=1e-2", "sft.batch_size=8", f"sft.data={{path: {demos}}}",
        f"output_dir={tmp_path / 'run'}"))
    run(cfg)
    out = tmp_path / "run"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    sft = [h for h in lines if h.get("phase") == "sft"]
    rl = [h for h in lines if h.get("phase") == "rl"]
    assert [h["step"] for h in sft] == list(range(-6, 0)) and [h["step"] for h in rl] == [0, 1, 2]
    assert sft[-1]["sft/loss"] < 0.5 * sft[0]["sft/loss"]
    # evaluated before the warm start (the model folder) and after it (step 0): the warm start moved held-out BLEU
    assert "eval/bleu" in sft[0] and "eval/bleu" in rl[0] and rl[0]["eval/bleu"] > sft[0]["eval/bleu"]
    first = rl[0]
    # the engine sampled the learner's weights, the warm-started ones (the learner's logprobs of the samples equal
    # the engine's), and the reference is that same policy: no KL at the first step
    assert first["logprob_gap"] < 1e-4 and abs(first["rollout_kl"]) < 1e-3
    assert (out / "warm_start" / "config.json").exists()
    # no reference actor: the policy actor holds the warm-started copy
    assert not (out / "logs" / "reference-0.log").exists()
