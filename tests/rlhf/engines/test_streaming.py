"""Requests streamed through a real vLLM engine in its rollout actor (rollout.mode=async): a weight load interrupts
them (partial rollouts) or waits for them, and every token keeps the version of the weights that sampled it."""

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM

from actors.rollout import RolloutActor
from rlhf.engines.base import EngineSettings, SamplingSettings
from rlhf.rollout.stream import Request
from rlhf.engines.vllm_engine import engine_environment

pytestmark = pytest.mark.integration
LENGTH = 40


def start(model: str):
    settings = EngineSettings(dtype="auto", max_model_len=128, kv_cache_gib=0.1, block_size=32,
                              gpu_memory_utilization=0.3, sleep_mode=False, weight_transfer=None)
    return RolloutActor.options(num_cpus=0, runtime_env={"env_vars": engine_environment(threads=1)}).remote(
        "vllm", model, settings, 0)


@pytest.fixture(scope="module")
def rollout(ray_cluster, tiny_model):
    actor = start(tiny_model)
    yield actor
    ray.kill(actor)


@pytest.fixture
def weights(tiny_model, tmp_path):
    """The same weights in a folder: loading them changes only the version the tokens are stamped with."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model.save_pretrained(tmp_path / "weights")
    return str(tmp_path / "weights"), model


@pytest.fixture
def other_weights(tiny_model, tmp_path):
    """Different weights: every parameter moved by noise. The full state dict, tied embeddings included (a missing
    lm_head would only be logged by vLLM, and give wrong logits)."""
    from rlhf.training.weight_file import write_weights

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    (tmp_path / "other").mkdir()
    write_weights(model.state_dict(), str(tmp_path / "other" / "model.safetensors"))
    return str(tmp_path / "other"), model


def requests(tag: str, count: int = 4) -> list[Request]:
    # every sample runs to the budget: the interruption lands mid-way in each
    sampling = SamplingSettings(LENGTH, temperature=1.0, top_p=1.0, seed=11, ignore_eos=True)
    return [Request(f"{tag}{i}", [5, 6, 7, 8 + i], sampling) for i in range(count)]


def run_to_end(rollout, version_load=None) -> tuple[dict, object]:
    """Advance until every request is back; before the second slice, load weights (version `version_load`)."""
    finished, report = {}, None
    while report is None or report.running:
        report = ray.get(rollout.advance.remote(0.02))
        finished.update(report.finished)
        if version_load is not None:
            ray.get(rollout.load_weights.remote(*version_load))
            version_load = None
    return finished, report


def teacher_forced_logprobs(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(tokens)[:, None])[:, 0]


def test_a_push_interrupts_running_requests_which_go_on_from_their_tokens(rollout, weights, tiny_model):
    from transformers import AutoTokenizer

    folder, model = weights
    ray.get(rollout.submit.remote(requests("p"), True))
    before = ray.get(rollout.advance.remote(0.0)).interrupted["push"]
    finished, report = run_to_end(rollout, version_load=(folder, 1))
    assert report.interrupted["push"] - before == 4 and report.version == 1
    for request in requests("p"):
        sample = finished[request.id]
        assert len(sample.completion_ids) == len(sample.logprobs) == len(sample.versions) == LENGTH
        # sampled on version 0 up to the interruption, on version 1 after it, never back
        cut = sample.versions.index(1)
        assert 0 < cut < LENGTH and sample.versions == [0] * cut + [1] * (LENGTH - cut)
        # the continuation was the prompt followed by the tokens so far: the engine's logprobs are the model's own
        # for the whole sequence, on both sides of the cut
        expected = teacher_forced_logprobs(model, request.prompt_ids, sample.completion_ids)
        assert torch.allclose(torch.tensor(sample.logprobs), expected, atol=1e-4)
        # the text of both parts
        assert sample.text == AutoTokenizer.from_pretrained(tiny_model).decode(sample.completion_ids,
                                                                               skip_special_tokens=True)


def test_a_request_continues_across_a_real_weight_change_on_the_new_weights(rollout, other_weights, tiny_model):
    folder, new = other_weights
    old = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    version = ray.get(rollout.advance.remote(0.0)).version
    ray.get(rollout.load_weights.remote(tiny_model, version + 1))  # the initial weights again (earlier tests' loads)
    ray.get(rollout.submit.remote(requests("c", 2), True))
    finished, _ = run_to_end(rollout, version_load=(folder, version + 2))
    for request in requests("c", 2):
        sample = finished[request.id]
        cut = sample.versions.index(version + 2)
        assert 0 < cut < LENGTH and sample.versions == [version + 1] * cut + [version + 2] * (LENGTH - cut)
        engine = torch.tensor(sample.logprobs)
        on_old = teacher_forced_logprobs(old, request.prompt_ids, sample.completion_ids)
        on_new = teacher_forced_logprobs(new, request.prompt_ids, sample.completion_ids)
        # the first part sampled by the old weights, the continuation by the new ones, each token's logprob its own
        assert torch.allclose(engine[:cut], on_old[:cut], atol=1e-4)
        assert torch.allclose(engine[cut:], on_new[cut:], atol=1e-4)
        assert (on_new[cut:] - on_old[cut:]).abs().max() > 1e-2  # the weights did change


def test_without_partial_rollouts_a_push_waits_for_running_requests(ray_cluster, weights, tiny_model):
    fresh = start(tiny_model)  # a stream takes its mode from the first submit: an actor of its own
    try:
        ray.get(fresh.submit.remote(requests("w"), False))
        finished, report = run_to_end(fresh, version_load=(weights[0], 1))
        assert report.interrupted == {"push": 0, "eval": 0} and report.version == 1
        # every token came from the weights the requests started with: the load waited for them
        assert all(s.versions == [0] * LENGTH for s in finished.values()) and len(finished) == 4
    finally:
        ray.kill(fresh)


def test_a_generation_between_slices_leaves_the_stream_whole(rollout):
    ray.get(rollout.submit.remote(requests("g", 2), True))
    before = ray.get(rollout.advance.remote(0.02)).interrupted
    sampling = SamplingSettings(8, temperature=1.0, top_p=1.0, seed=3)
    alone = ray.get(rollout.generate.remote([[5, 6, 7]], 2, sampling))
    finished, report = run_to_end(rollout)
    # counted as interrupted by an evaluation, not by a push
    assert report.interrupted["eval"] - before["eval"] == 2 and report.interrupted["push"] == before["push"]
    assert sorted(finished) == ["g0", "g1"] and all(len(s.completion_ids) == LENGTH for s in finished.values())
    # the evaluation's samples are what the engine gives with nothing else running
    assert [s.completion_ids for s in ray.get(rollout.generate.remote([[5, 6, 7]], 2, sampling))[0]] == \
        [s.completion_ids for s in alone[0]]


def test_seeded_sampling_over_more_prompt_tokens_than_a_step_takes(rollout):
    # 48 prompts of 100 tokens: more than a step's budget of 4096, where vLLM would prefill one in chunks and then
    # rewind its seeded generator, which a CPU generator cannot ("CPU Generator does not use offset"); prefilled
    # whole, each sample is its seed's, whatever else shares the batch
    prompts = [[(7 * i + j) % 200 + 5 for j in range(100)] for i in range(48)]
    sampling = SamplingSettings(8, temperature=1.0, top_p=1.0, seed=5)
    everything = ray.get(rollout.generate.remote(prompts, 2, sampling))
    first = ray.get(rollout.generate.remote(prompts[:1], 2, sampling))
    assert len(everything) == 48 and [s.completion_ids for s in everything[0]] == [s.completion_ids for s in first[0]]
