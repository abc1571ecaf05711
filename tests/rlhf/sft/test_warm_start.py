"""A warm start inside an RL run: SFT steps on the same learner, then GRPO from those weights, pushed to the engine;
the reference is the warm-started policy, LSC's r_ref its rewards. Both phases in metrics.jsonl. A run stopped during
the warm start resumes in it and continues as the uninterrupted run did."""

import json
import signal

import pytest

from rlhf.config import compose_config, load_config
from rlhf.driver import run
from rlhf.sft import steps as sft_steps
from rlhf.stopping import StopRequest

pytestmark = pytest.mark.integration


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rl_starts_from_the_warm_started_policy_and_a_resume_lands_in_the_warm_start(ray_cluster, tiny_model, tmp_path,
                                                                                     monkeypatch):
    task = write(tmp_path / "task.jsonl", [{"prompt": f"Repeat the letter a, request {i}.",
                                           "references": ["a a a a a a a a a a"]} for i in range(16)])
    demos = write(tmp_path / "demos.jsonl", [{"prompt": f"Repeat the letter a, request {i}.",
                                             "completion": "a a a a a a a a a a"} for i in range(16)])

    def config(out, *overrides):
        return load_config(compose_config(
            "model=path", f"model.path={tiny_model}", "data=file", f"data.path={task}", "prompts_per_step=2",
            "algo.group_size=4", "rollout.max_new_tokens=12", "train.lr=1e-3", "train.micro_batch_size=8",
            "algo.kl.beta=0.01", "steps=2", "eval.every=2", "eval.held_out=2", "logging.progress_bar=false",
            "sft.steps=6", "sft.lr=1e-2", "sft.batch_size=8", f"sft.data={{path: {demos}}}", "checkpoint.every=4",
            "reward.aggregation=lsc", "reward.lsc.ref_samples=2", "rollout.engine=hf",  # ~10 s sooner a run
            f"output_dir={tmp_path / out}", *overrides))

    run(config("run"))
    out = tmp_path / "run"
    lines = records(out)
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
    # no reference actor: the policy actor holds the warm-started copy, which its pre-flight held too
    assert not (out / "logs" / "reference-0.log").exists()
    reports = {r["role"]: r for r in json.loads((out / "preflight.json").read_text())}
    assert "reference" not in reports and reports["policy rank 0"]["frozen_reference"] is True
    # LSC's r_ref (each prompt's 0.85 quantile of BLEU over 2 samples of the initial policy) is the warm-started
    # policy's, which writes the a's; the model folder's greedy BLEU is near 0
    r_ref = json.loads((out / "reference_rewards.json").read_text())
    assert len(r_ref) == 4 and sum(v[0] for v in r_ref.values()) / 4 > sft[0]["eval/bleu"] + 0.25, r_ref
    assert all(h["reward"] < 0 for h in rl if "reward" in h)  # log sigmoid(BLEU - r_ref)

    # stopped after the warm start's third step (a checkpoint of it, on_stop), resumed: it lands in the warm start,
    # continues it, then the RL phase, exactly as the run above went
    stop, real_train, done = StopRequest(), sft_steps.train, []

    def train_then_stop(*args):
        metrics = real_train(*args)
        done.append(1)
        if len(done) == 3:
            stop.signal = signal.SIGTERM
        return metrics

    monkeypatch.setattr(sft_steps, "train", train_then_stop)
    run(config("parts", "logging.wandb_mode=disabled"), stop)
    parts = tmp_path / "parts"
    assert stop.after_step == -4 and [h["step"] for h in records(parts)] == [-6, -5, -4]
    assert sorted(p.name for p in (parts / "checkpoints").iterdir()) == ["step--00004"]
    monkeypatch.setattr(sft_steps, "train", real_train)
    run(config("parts", "logging.wandb_mode=disabled", "resume=auto"))
    resumed = records(parts)
    assert [h["step"] for h in resumed] == [h["step"] for h in lines]
    sft_keys = ["sft/loss", "sft/token_accuracy", "grad_norm", "lr"]
    assert [[h[k] for k in sft_keys] for h in resumed if h.get("phase") == "sft"] == \
        [[h[k] for k in sft_keys] for h in sft]
    rl_keys = ["reward", "loss", "grad_norm", "rollout_kl", "logprob_gap"]
    assert [h[k] for h in resumed if "reward" in h for k in rl_keys] == \
        pytest.approx([h[k] for h in rl if "reward" in h for k in rl_keys], abs=1e-6)
    assert json.loads((parts / "reference_rewards.json").read_text()) == pytest.approx(r_ref)  # after the resumed warm start
    # warm-start checkpoints at steps -4 (the stop), -3 (every 4), -1 (its last), then the RL run's last: 2 kept
    assert sorted(p.name for p in (parts / "checkpoints").iterdir()) == ["step--00001", "step-000001"]


def records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
