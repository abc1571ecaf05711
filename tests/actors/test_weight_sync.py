"""The real actors on a real Ray instance: a DeepSpeed learner step, the CPU weight-sync route, vLLM."""

import os
import time

import pytest
import ray
import torch
from transformers import AutoTokenizer

from actors.learner_group import LearnerGroup
from actors.policy import PolicyActor
from actors.rollout import RolloutActor
from actors.weight_sync import SharedMemoryRoute, WeightSyncTimeout, make_route
from rlhf.config import compose_config
from rlhf.algorithms import group_advantages
from rlhf.config import load_config
from rlhf.engines import SamplingSettings
from rlhf.engines.base import EngineSettings
from rlhf.engines.vllm_engine import engine_environment
from rlhf.experience import Experience

pytestmark = pytest.mark.integration
SAMPLING = SamplingSettings(max_new_tokens=8, temperature=1.0, top_p=1.0)


def start_rollout(engine: str, model: str):
    env = engine_environment(threads=1)
    settings = EngineSettings(dtype="auto", max_model_len=256, kv_cache_gib=0.25, block_size=32,
                              gpu_memory_utilization=0.3, sleep_mode=False, weight_transfer=None)
    return RolloutActor.options(num_cpus=0, runtime_env={"env_vars": env}).remote(engine, model, settings, 0)


def start_policy(model: str, zero_stage: int, batch_size: int):
    cfg = load_config(compose_config("experiment=smoke", f"train.zero_stage={zero_stage}", "train.lr=0.05", "algo.kl.beta=0",
                              f"train.micro_batch_size={batch_size // 2}", "output_dir=/tmp/unused"))
    env = {"OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": os.path.expanduser("~/.cache/rlhf/torch_extensions")}
    return LearnerGroup([PolicyActor.options(num_cpus=0, runtime_env={"env_vars": env}).remote(
        model, cfg.train, cfg.algo, batch_size, SAMPLING.max_new_tokens, SAMPLING.temperature, 0)])


def rollout_batch(rollout, tokenizer, n=4):
    prompts = [tokenizer("what is 3 plus 4?")["input_ids"], tokenizer("the cat")["input_ids"]]
    samples = ray.get(rollout.generate.remote(prompts, n, SAMPLING))
    assert [len(g) for g in samples] == [n, n]
    experience = Experience.from_samples(prompts, samples, tokenizer.pad_token_id)
    experience.rewards = torch.arange(experience.size, dtype=torch.float32)  # any non-constant reward
    experience.advantages = group_advantages(experience.rewards, n)[:, None] * experience.mask
    return experience


# overlap: the push returns before the engine has reloaded; the engine must still reload before its next generation.
# vLLM with shm runs in every driver test; here vLLM reloads from the object store (from memory, no file).
@pytest.mark.parametrize("engine, zero_stage, overlap, kind", [("vllm", 0, True, "object_store"),
                                                              ("hf", 3, False, "shm")])
def test_engine_generates_with_the_learners_newest_weights(ray_cluster, tiny_model, tmp_path, engine, zero_stage,
                                                           overlap, kind):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rollout = start_rollout(engine, tiny_model)
    policy = start_policy(tiny_model, zero_stage, batch_size=8)

    before = rollout_batch(rollout, tokenizer)
    # fp32 engine logprobs equal the learner's on the same weights
    torch.testing.assert_close(before.rollout_logp, policy.run("logprobs", before), atol=1e-5, rtol=0)

    metrics = policy.run("train_step", before)
    assert metrics["grad_norm"] > 0 and torch.isfinite(torch.tensor(metrics["loss"]))
    route = make_route(kind, policy, [rollout], str(tmp_path / "sync"), overlap, timeout_s=60, drain_timeout_s=60,
                       bucket_mb=16, sleep=False)
    assert route.name == kind
    if kind == "shm":  # named after learner rank 0's process, which writes and removes it, not after the driver's
        pid = ray.get(policy.ranks[0].__ray_call__.remote(lambda self: os.getpid()))
        name = os.path.basename(route.folder)
        assert f"-{pid}-" in name and f"-{os.getpid()}-" not in name, name
    route.push()
    assert bool(route.loading) == overlap

    after = rollout_batch(rollout, tokenizer)
    learner_after = policy.run("logprobs", after)
    torch.testing.assert_close(after.rollout_logp, learner_after, atol=1e-5, rtol=0)
    # and the weights really moved: the old batch is now scored differently
    assert (policy.run("logprobs", before) - before.rollout_logp).abs().max() > 1e-3
    # a second push rewrites the file only after the first reload is done, and is again what the engine samples
    policy.run("train_step", after)
    route.push()
    again = rollout_batch(rollout, tokenizer)
    torch.testing.assert_close(again.rollout_logp, policy.run("logprobs", again), atol=1e-5, rtol=0)
    route.close()
    assert not list(tmp_path.glob("sync/*"))  # shm removes its folder; object_store never made one
    ray.kill(rollout)
    policy.kill()


def test_a_non_finite_loss_names_the_quantity(ray_cluster, tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rollout = start_rollout("hf", tiny_model)
    policy = start_policy(tiny_model, zero_stage=0, batch_size=8)
    experience = rollout_batch(rollout, tokenizer)
    experience.advantages[0, 0] = float("nan")
    with pytest.raises(ray.exceptions.RayTaskError, match="non-finite quantity: advantages"):
        policy.run("train_step", experience)
    ray.kill(rollout)
    policy.kill()


def test_gpu_routes_ask_the_actors_where_they_compute(ray_cluster, tiny_model, tmp_path):
    # on this machine every actor computes on the CPU: auto falls back to shm, cuda_ipc and nccl refuse by name
    rollout = start_rollout("hf", tiny_model)
    policy = start_policy(tiny_model, zero_stage=0, batch_size=8)
    settings = dict(sync_dir=str(tmp_path / "sync"), overlap=False, timeout_s=60, drain_timeout_s=60, bucket_mb=16,
                    sleep=False)
    assert isinstance(make_route("auto", policy, [rollout], **settings), SharedMemoryRoute)
    with pytest.raises(RuntimeError, match=r"cuda_ipc needs .* policy rank 0 on the CPU .*rollout engine 0 on the CPU"):
        make_route("cuda_ipc", policy, [rollout], **settings)
    with pytest.raises(RuntimeError, match=r"nccl needs GPUs, but policy rank 0, rollout engine 0 compute on the CPU"):
        make_route("nccl", policy, [rollout], **settings)

    # every wait is bounded: an actor that does not finish its part of a push in time is named, with the route
    route = SharedMemoryRoute(policy, [rollout], str(tmp_path / "sync"), timeout_s=60, drain_timeout_s=60)
    route.timeout_s = 1e-3
    with pytest.raises(WeightSyncTimeout, match=r"route shm: policy rank 0 did not finish writing the weight file "
                                                r"within rollout.sync_timeout_s=0.001 s"):
        route.push()
    # the timed-out write goes on in the background: a whole push first, so that the reload below finds a complete
    # file (it raced the write on a busy machine: "file not found" instead of the timeout under test)
    route.timeout_s = 60
    route.push()
    route.timeout_s = 1e-3
    # a new version, its load queued behind 2 s of other work (the actor runs its calls in order): the tiny model's
    # load alone could finish within the 1 ms, and did once on a quiet machine
    pause = rollout.pause.remote()
    rollout.__ray_call__.remote(lambda self: time.sleep(2))
    route.loading = [(0, pause, [rollout.load_weights.remote(route.folder, 2)])]
    with pytest.raises(WeightSyncTimeout, match=r"route shm: rollout engine 0 did not finish reloading"):
        route.wait_for_reloads()
    route.timeout_s = 60
    route.close()
    ray.kill(rollout)
    policy.kill()
