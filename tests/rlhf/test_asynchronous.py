"""rollout.mode=async through the whole actor stack: the same batches as a synchronous run at staleness 0, the
staleness bound under a slow engine, learning, episodes."""

import json
import time
from types import SimpleNamespace

import pytest
import ray

import rlhf.rollout.asynchronous
from rlhf.driver import run
from test_driver import config, write_task

pytestmark = pytest.mark.integration
ASYNC = ["rollout.mode=async", "logging.wandb_mode=disabled", "checkpoint.every=0",
         "save_final=false"]


def history(tmp_path, name="run"):
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "reward" in r]


def test_with_no_staleness_an_async_run_trains_on_what_a_synchronous_run_does(ray_cluster, tiny_model, tmp_path):
    # admission lets one batch in per version and the learner waits for all of it: the same prompts, seeds and weights
    common = ["steps=3", "algo.kl.beta=0", "logging.wandb_mode=disabled", "checkpoint.every=0", "save_final=false"]
    run(config(tiny_model, tmp_path, *common, f"output_dir={tmp_path / 'sync'}"))
    run(config(tiny_model, tmp_path, *common, "rollout.mode=async", "rollout.max_staleness=0",
               "rollout.partial_rollouts=false", f"output_dir={tmp_path / 'async'}"))
    synchronous, asynchronous = history(tmp_path, "sync"), history(tmp_path, "async")
    assert [h["step"] for h in asynchronous] == [0, 1, 2]
    for want, have in zip(synchronous, asynchronous):
        for key in want:
            if not key.startswith("time/"):
                assert have[key] == pytest.approx(want[key], rel=1e-6, abs=1e-7), (want["step"], key)
        assert have["async/staleness_max"] == 0 and have["async/discarded"] == 0


@ray.remote(num_cpus=0)
def late(report, seconds: float):
    """An engine's report, `seconds` after it came: an engine that generates in short bursts with long pauses."""
    time.sleep(seconds)
    return report


def slow_second_engine(monkeypatch, seconds: float) -> None:
    """The async schedule's second engine answers every advance `seconds` late (the engine itself is unchanged)."""
    made, Engine = [], rlhf.rollout.asynchronous.Engine

    def engine(actor):
        if made:  # the second engine
            real = actor
            actor = SimpleNamespace(submit=real.submit, ready=real.ready, start=real.start,
                                    advance=SimpleNamespace(remote=lambda s: late.remote(real.advance.remote(s), seconds)))
        made.append(Engine(actor))
        return made[-1]

    monkeypatch.setattr(rlhf.rollout.asynchronous, "Engine", engine)


# the default suite: 8 steps (the staleness bound); the learning run (32) is in scripts/extended_checks.sh
@pytest.mark.parametrize("steps", [8, pytest.param(32, marks=pytest.mark.extended, id="learning")])
def test_async_learns_and_a_slow_engine_never_makes_a_trained_token_too_stale(ray_cluster, tiny_model, tmp_path,
                                                                              monkeypatch, steps):
    # the second engine's groups come back late; the learner trains on the first's meanwhile but waits for any
    # group that would pass the bound, so no token it trains on is more than max_staleness updates old
    # (an evaluation at mid-run runs on the engines between two slices of their stream)
    slow_second_engine(monkeypatch, seconds=0.4)
    run(config(tiny_model, tmp_path, f"steps={steps}", "seed=1", "algo.kl.beta=0.01", *ASYNC, "algo/correction=tis",
               "rollout.max_staleness=2", "rollout.engines=2", "rollout.num_cpus=0.5", f"eval.every={steps // 2}",
               f"eval.data={{path: {write_task(tmp_path / 'eval.jsonl', rows=4, first=100)}}}"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/bleu" in r] == [0, steps // 2, steps]
    trained = history(tmp_path)
    assert [h["step"] for h in trained] == list(range(steps))
    assert all(h["async/staleness_max"] <= 2 for h in trained) and max(h["async/staleness_max"] for h in trained) >= 1
    assert sum(h["async/discarded"] for h in trained) == 0  # the bound held by admission, not by throwing away
    assert sum(h["async/interrupted_push"] for h in trained) > 0  # pushes landed mid-generation: partial rollouts
    assert max(h["async/engine1_idle"] for h in trained) > 0.5  # the second engine was the slow one
    if steps == 32:  # learns as the synchronous GRPO run of test_driver does on this task (10 x BLEU: a rise of > 3)
        rewards = [h["reward"] for h in trained]
        assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 3.0, rewards


def test_async_episodes_advance_each_on_its_own(ray_cluster, tiny_model, tmp_path):
    # each episode asks for its next turn as soon as its last one is answered (RepeatA: "Again." once); at staleness
    # 0 the learner's logprobs of the model's tokens equal the engine's, the environment's tokens being context
    run(config(tiny_model, tmp_path, "steps=3", "algo.kl.beta=0", *ASYNC, "rollout.max_staleness=0",
               "rollout.partial_rollouts=false", "env.factory=tests_agent_helpers:RepeatA", "env.reply=respond",
               "env.max_turns=2", "env.max_episode_tokens=64", "reward.functions=[{name: env}]"))
    steps = history(tmp_path)
    assert [h["step"] for h in steps] == [0, 1, 2]
    assert all(h["rollout/turns"] == 2 and h["rollout/env_tokens"] > 0 for h in steps)
    assert max(h["logprob_gap"] for h in steps) < 1e-4
    assert all(h["async/staleness_max"] == 0 for h in steps)


def test_an_engine_killed_mid_run_gives_its_groups_to_the_other_and_comes_back(ray_cluster, tiny_model, tmp_path):
    from unittest import mock

    import rlhf.driver
    from test_driver import actor_named
    from tests_ray_helpers import actor_state, back_after_restart, wait_until

    report, killed = rlhf.driver.report, []

    def report_then_kill(step, *args):
        # inside the loop, after step 2's report: the loop goes on once the schedule has noticed the death (it polls an
        # engine without work too) and started the engine again in its new process
        report(step, *args)
        if step == 2:
            name, actor = actor_named("rollout-0-")
            restarts = actor_state(actor)["NumRestarts"]
            ray.kill(actor, no_restart=False)
            killed.append(name)
            wait_until(lambda: back_after_restart(actor, restarts + 1) and ray.get(actor.started.remote()),
                       f"{name} restarted and its engine started")

    # weights pushed every second update (max_staleness 1 allows it: the engines lag the learner by one meanwhile)
    cfg = config(tiny_model, tmp_path, "steps=14", "algo.kl.beta=0", *ASYNC, "algo/correction=tis", "rollout.engines=2",
                 "rollout.num_cpus=0.5", "fault_tolerance.max_restarts=1", "rollout.push_every=2")
    with mock.patch.object(rlhf.driver, "report", report_then_kill):
        run(cfg)
    steps = history(tmp_path)
    assert killed and [h["step"] for h in steps] == list(range(14))
    assert [("time/weight_sync" in h) for h in steps] == [False, True] * 7  # a push after updates 2, 4, ...
    assert all(h["async/staleness_max"] <= 1 for h in steps) and sum(h["async/discarded"] for h in steps) == 0
    # the current weights reached it at the next push: it took groups again
    assert min(h["async/engine0_idle"] for h in steps[6:]) < 1.0
