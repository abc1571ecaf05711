import pytest

from rlhf.checkpoint import (
    check_no_later_checkpoints,
    complete_checkpoints,
    find_checkpoint,
    read_driver_state,
    remove_unfinished,
    save_checkpoint,
)


def write_weights(folder):
    (folder / "policy").mkdir()
    (folder / "policy" / "weights.bin").write_bytes(b"w")


def test_keeps_the_newest_and_resume_auto_finds_it(tmp_path):
    for step in (4, 9, 14):
        save_checkpoint(tmp_path, step, write_weights, {"step": step}, keep_last=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000009", "step-000014"]
    newest = find_checkpoint("auto", tmp_path)
    assert newest.name == "step-000014" and read_driver_state(newest) == {"step": 14}
    assert (newest / "policy" / "weights.bin").read_bytes() == b"w"


def test_a_warm_starts_negative_steps_come_before_the_rl_steps(tmp_path):
    for step in (-3, -1, 0, -2):
        save_checkpoint(tmp_path, step, write_weights, {"step": step}, keep_last=3)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step--00002", "step--00001", "step-000000"]
    assert find_checkpoint("auto", tmp_path).name == "step-000000"
    check_no_later_checkpoints(tmp_path, 0)
    with pytest.raises(FileExistsError, match="step--00001"):
        check_no_later_checkpoints(tmp_path, -3)  # a fresh run with a 3-step warm start: its first step is -3


def test_a_crash_during_a_save_leaves_the_previous_checkpoint_usable(tmp_path):
    save_checkpoint(tmp_path, 4, write_weights, {"step": 4}, keep_last=1)

    def crash(folder):
        write_weights(folder)
        raise KeyboardInterrupt  # killed half-way through writing

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 9, crash, {"step": 9}, keep_last=1)
    assert find_checkpoint("auto", tmp_path).name == "step-000004"
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000004"]
    # a SIGKILL leaves the hidden temporary folder behind: it never counts and is swept at the next start
    (tmp_path / ".step-000009.abc").mkdir()
    assert find_checkpoint("auto", tmp_path).name == "step-000004"
    remove_unfinished(tmp_path)
    assert not list(tmp_path.glob(".step-*"))


def test_resume_choices(tmp_path):
    assert find_checkpoint(None, tmp_path) is None
    assert find_checkpoint("auto", tmp_path / "nothing-yet") is None
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        find_checkpoint(str(tmp_path / "half"), tmp_path)


def test_a_fresh_run_refuses_to_overwrite_an_earlier_runs_checkpoints(tmp_path):
    save_checkpoint(tmp_path, 9, write_weights, {"step": 9}, keep_last=2)
    with pytest.raises(FileExistsError, match=r"step-000009.*resume=auto"):
        check_no_later_checkpoints(tmp_path, -1)
    check_no_later_checkpoints(tmp_path, 9)  # resuming from it is fine


def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_it_resumed(tmp_path, caplog):
    for step in (4, 9):
        save_checkpoint(tmp_path, step, write_weights, {"step": step}, keep_last=2)
    assert (tmp_path / "step-000009" / "manifest.json").is_file()
    (tmp_path / "step-000009" / "policy" / "weights.bin").write_bytes(b"")  # truncated since
    with pytest.raises(ValueError, match=r"step-000009.* is damaged: policy/weights.bin has 0 bytes, the manifest says 1"):
        find_checkpoint(str(tmp_path / "step-000009"), tmp_path)  # asked for by name: refused
    with caplog.at_level("WARNING"):
        assert find_checkpoint("auto", tmp_path).name == "step-000004"
    assert "policy/weights.bin has 0 bytes" in caplog.text
    assert (tmp_path / "damaged-step-000009" / "driver.json").is_file()  # kept, out of the way
    check_no_later_checkpoints(tmp_path, 4)  # the run resumed from step 4 may write step 9 again
    (tmp_path / "step-000004" / "policy" / "weights.bin").write_bytes(b"x")  # same size, other bytes
    assert find_checkpoint("auto", tmp_path) is None  # nothing sound is left: start from step 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged-step-000004", "damaged-step-000009"]


def test_a_full_disk_fails_clearly_and_leaves_the_earlier_checkpoints_as_they_were(tmp_path):
    import errno

    from rlhf.checkpoint import CheckpointWriteError

    save_checkpoint(tmp_path, 4, write_weights, {"step": 4}, keep_last=1)

    def disk_full(folder):
        write_weights(folder)
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "policy" / "optim.pt"))

    with pytest.raises(CheckpointWriteError, match=r"step 9: .*no space left.*\['step-000004'\] are as they were"):
        save_checkpoint(tmp_path, 9, disk_full, {"step": 9}, keep_last=1)
    assert [p.name for p in tmp_path.iterdir()] == ["step-000004"]  # no half-written folder, nothing pruned
    assert find_checkpoint("auto", tmp_path).name == "step-000004"


def test_torchs_bare_write_failure_on_a_full_disk_is_named_as_such(tmp_path, monkeypatch):
    # torch.save's zip writer on a full disk (a real run, 2026-12-06): no ENOSPC anywhere, only these words
    import shutil
    from collections import namedtuple

    from rlhf import checkpoint
    from rlhf.checkpoint import CheckpointWriteError

    save_checkpoint(tmp_path, 4, write_weights, {"step": 4}, keep_last=1)

    def torch_short_write(folder):
        raise RuntimeError("basic_ios::clear: iostream error ... [enforce fail at inline_container.cc:672] . "
                           "unexpected pos 1660485888 vs 1660485776")

    usage, real = namedtuple("usage", "total used free"), shutil.disk_usage
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda root: usage(10, 10, 0))
    with pytest.raises(CheckpointWriteError, match="no space left"):
        save_checkpoint(tmp_path, 9, torch_short_write, {"step": 9}, keep_last=1)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", real)  # with room the error is not hidden
    with pytest.raises(RuntimeError, match="unexpected pos"):
        save_checkpoint(tmp_path, 9, torch_short_write, {"step": 9}, keep_last=1)


# --- a real run killed and resumed -------------------------------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import psutil  # noqa: E402

from tests_run_helpers import start_run  # noqa: E402

# experiment=smoke: 16 prompts, 2 per step, so steps 0-7 are the data's first epoch. Checkpoints after steps 3
# (mid-epoch), 7 (the epoch boundary, where the data's order is drawn again) and 10 (the last).
# The HF engine and no pre-flight: each process starts ~10 s sooner (vLLM's exact resume is the same seeding,
# checked by the in-process tests that restart an engine).
RUN = ["experiment=smoke", "steps=11", "checkpoint.every=4", "checkpoint.keep_last=3", "save_final=false",
       "logging.progress_bar=false", "rollout.engine=hf", "preflight.enabled=false"]


def start(out, *extra):
    return start_run(out, *RUN, *extra)


def finish(process):
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]


def kill_when_logged(process, out, step):
    """SIGKILL the driver (and the local Ray it started) as soon as `step` appears in its metrics."""
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
        if any(json.loads(line)["step"] == step for line in lines if line.endswith("}")):
            break
        time.sleep(0.05)  # soon after `step`: well before the next step's line and checkpoint
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-3000:]}"
    family = [process.pid, *(c.pid for c in psutil.Process(process.pid).children(recursive=True))]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def history(out):
    # whole lines only: a SIGKILL may land in the middle of one
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.endswith("}")]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


@pytest.mark.integration
def test_a_killed_run_redoes_its_lost_steps_to_the_same_metrics(tmp_path):
    # killed once step 9 is logged (no checkpoint is being written then: the next is step 10's). The resume starts
    # from the checkpoint of step 7, exactly at the epoch boundary, and redoes steps 8 and 9, which the killed run,
    # uninterrupted up to there, logged before it died: they must agree in every metric (step 9's are those of the
    # weights that step 8's update made from the restored optimizer state). A mid-epoch resume to the same metrics:
    # tests/rlhf/sft/test_sft_run.py (the same data cursor); the async test below: no prompt lost or trained twice
    killed = tmp_path / "killed"
    segment = start(killed)
    kill_when_logged(segment, killed, 9)  # checkpoint 7 is complete: it is written before step 8 starts
    lost = history(killed)[8:]  # steps 8 and 9 (and 10, had it been logged before the kill landed)
    finish(start(killed, "resume=auto"))

    got = history(killed)
    assert [r["step"] for r in got] == list(range(12))  # 11 steps, then the final weights' evaluation
    assert [r["step"] for r in lost][:2] == [8, 9]
    for want in lost:
        have = got[want["step"]]
        assert have.keys() == want.keys()
        for key in want:
            assert have[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (want["step"], key)
    superseded = killed / "metrics.superseded.jsonl"  # the lines logged after the checkpoint, kept
    assert superseded.exists(), "the kill came after step 10's checkpoint: this test's race, not the resume's fault"
    assert [json.loads(line)["step"] for line in superseded.read_text().splitlines() if line.endswith("}")] == \
        [r["step"] for r in lost]
    kept = [p.name for p in complete_checkpoints(killed / "checkpoints")]
    assert kept == ["step-000003", "step-000007", "step-000010"]


@pytest.mark.integration
def test_a_killed_async_run_resumes_without_losing_or_repeating_a_prompt(tmp_path):
    # 5 steps of 2 prompts from an epoch of 16: no prompt may be trained twice. The checkpoint after step 1 records the
    # groups then running or waiting; the resumed run admits them first and trains each (they are due within
    # max_staleness + 1 updates), so none of the prompts drawn before the kill is lost
    from transformers import AutoTokenizer

    from rlhf.config import compose_config, load_config
    from rlhf.data import prompt_sets
    from rlhf.models import resolve_model_path

    out = tmp_path / "async"
    extra = ["steps=5", "checkpoint.every=1", "rollout.engine=vllm", "rollout.mode=async", "algo/correction=tis",
             "rollout.max_staleness=1", "logging.samples_per_step=2"]
    segment = start(out, *extra)
    kill_when_logged(segment, out, 2)  # the checkpoint of step 1 is complete: it is written before step 2 starts
    checkpoint = out / "checkpoints" / "step-000001"
    requeued = json.loads((checkpoint / "driver.json").read_text())["async_requeue"]
    finish(start(out, *extra, "resume=auto"))

    trained = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted({row["step"] for row in trained}) == list(range(5)) and len(trained) == 10
    prompts = [row["prompt"] for row in trained]
    assert len(set(prompts)) == 10, "a prompt was trained twice"
    cfg = load_config(compose_config(*RUN, *extra, f"output_dir={out}"))
    stream, _ = prompt_sets(cfg, AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.source, cfg.model.path)))
    assert requeued and set(stream.batch(requeued).texts) <= {row["prompt"] for row in trained if row["step"] > 1}
