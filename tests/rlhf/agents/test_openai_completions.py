"""The endpoint's legacy text completions (/v1/completions) for agents written against the OpenAI client: the real
`openai` client's `completions.create`, token in, token out, as chat does."""

import httpx
import pytest
import tests_agent_helpers
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.agents.openai_agents import AgentRunner
from rlhf.agents.openai_api import RequestError, completion_response, parse_completion_request, stop_cut
from rlhf.config import compose_config, load_config
from rlhf.data import PromptBatch
from rlhf.engines.base import Sample, SamplingSettings
from rlhf.experience import Experience
from rlhf.rollout.timing import NO_TIMER
from rlhf.training.logprobs import completion_logprobs


def refused(body: dict) -> str:
    with pytest.raises(RequestError) as err:
        parse_completion_request({"model": "policy", "prompt": "p", **body})
    assert err.value.status == 400
    return err.value.param


def test_requests_are_read_as_openai_writes_them_and_the_rest_refused_naming_the_field():
    call = parse_completion_request({"model": "m", "prompt": ["text"], "stop": "\n", "logprobs": 0, "n": 1,
                                     "best_of": 1, "echo": False, "temperature": 0.2, "max_tokens": 7})
    assert (call.prompt, call.stop, call.logprobs, call.max_tokens, call.ignored) == ("text", ["\n"], True, 7,
                                                                                      ["temperature"])
    assert parse_completion_request({"model": "m", "prompt": [[3, 4]]}).prompt == [3, 4]  # a batch of one
    assert parse_completion_request({"model": "m", "prompt": "p"}).logprobs is False
    assert refused({"echo": True}) == "echo"
    assert refused({"n": 2}) == "n"
    assert refused({"best_of": 3}) == "best_of"
    assert refused({"logprobs": 2}) == "logprobs"
    assert refused({"suffix": "x"}) == "suffix"
    assert refused({"frequency_penalty": 1.0}) == "frequency_penalty"
    assert refused({"prompt": ["one", "two"]}) == "prompt"
    assert refused({"prompt": [1, -2]}) == "prompt"
    assert refused({"stop": ["a", "b", "c", "d", "e"]}) == "stop"
    assert refused({"max_tokens": 0}) == "max_tokens"


def test_a_stop_string_keeps_the_tokens_wholly_before_it_and_the_response_has_openais_legacy_shape():
    from openai.types import Completion

    pieces = ["He", "llo", "\nW", "orld"]
    decode = lambda ids: "".join(pieces[i] for i in ids)
    assert stop_cut([0, 1, 2, 3], decode, ["\n"]) == 2
    assert stop_cut([0, 1, 2, 3], decode, ["lo"]) == 1  # "llo" holds the stop string's start: dropped
    assert stop_cut([0, 1, 2, 3], decode, ["orld", "W"]) == 2  # the first in the text wins
    assert stop_cut([0, 1, 2, 3], decode, ["zz"]) is None
    response = Completion.model_validate(completion_response("Hello", "stop", 3, 2, [-0.5, -1.0], ["He", "llo"], "m"))
    assert response.object == "text_completion" and response.usage.total_tokens == 5
    assert response.choices[0].logprobs.text_offset == [0, 2] and response.choices[0].logprobs.token_logprobs == [-0.5, -1.0]


def runner_for(engine, tiny_model, agent, *overrides) -> AgentRunner:
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", f"env.agent=tests_agent_helpers:{agent}",
                                     "rollout.max_new_tokens=8", "env.max_episode_tokens=256",
                                     "data.max_prompt_tokens=900", "output_dir=/tmp/unused", *overrides))
    return AgentRunner(engine, cfg, AutoTokenizer.from_pretrained(tiny_model))


@pytest.mark.integration
def test_completions_are_token_in_token_out_and_a_prompt_that_does_not_extend_opens_a_segment(engine, tiny_model):
    tests_agent_helpers.SEEN.clear()
    runner = runner_for(engine, tiny_model, "completes")
    tokenizer = runner.tokenizer
    calls = []  # (the tokens the engine continued, what it sampled, their logprobs), call by call
    respond = runner._respond_text

    def spy(session, pending, sample):
        calls.append((pending.prompt_ids, sample.completion_ids, sample.logprobs))
        return respond(session, pending, sample)

    runner._respond_text = spy
    batch = PromptBatch([{"prompt": "Say a.", "question": "what is 2 + 3?"}], [[0]], [""])
    try:
        [[episode]] = runner.rollout(batch, 1, SamplingSettings(8, 1.0, 1.0, seed=3), None, NO_TIMER)
    finally:
        runner.close()
    [[prompt, extended, first, second, chunks]] = tests_agent_helpers.SEEN
    assert not episode.failed and episode.turns == 3 and episode.segments == 2 and episode.env_reward == 1.0
    (context1, sampled1, logp1), (context2, sampled2, logp2), (context3, sampled3, _) = calls
    # the first prompt tokenized as vLLM's completions do; the reply is the engine's tokens, decoded
    assert context1 == tokenizer(prompt)["input_ids"] and first.object == "text_completion"
    assert first.choices[0].text == tokenizer.decode(sampled1, skip_special_tokens=True)
    assert first.choices[0].logprobs.token_logprobs == pytest.approx(logp1, abs=1e-6)
    assert len(first.choices[0].logprobs.tokens) == first.usage.completion_tokens == len(sampled1)
    # the second prompt extends the text served: only its new text's tokens are the environment's
    new_text = extended[len(prompt + first.choices[0].text):]
    assert new_text == "\nObservation: 5\nA:"
    assert context2 == context1 + sampled1 + tokenizer(new_text, add_special_tokens=False)["input_ids"]
    assert second.choices[0].logprobs.token_logprobs == pytest.approx(logp2, abs=1e-6)
    # token ids that do not extend the episode's tokens: a segment of its own, streamed back in OpenAI's chunks
    assert context3 == [5, 6, 7, 8]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == tokenizer.decode(sampled3, skip_special_tokens=True)
    assert chunks[-1].usage.completion_tokens == len(sampled3) and chunks[-2].choices[0].finish_reason in ("stop", "length")
    # the episode's row: both segments as the engine saw them, only the sampled tokens trained, the learner's
    # logprobs the engine's
    experience = Experience.from_samples(batch.token_ids, [[episode]], pad_id=0)
    assert experience.prompt_ids[0].tolist() == context1
    completion = experience.completion_ids[0].tolist()
    assert completion == context2[len(context1):] + sampled2 + context3 + sampled3
    assert experience.mask[0].tolist() == [float(m) for m in episode.model_mask]
    assert experience.segments[0].tolist() == [0] * (len(context2) - len(context1) + len(sampled2)) + \
        [1] * (len(context3) + len(sampled3))
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        learner = completion_logprobs(model, experience.input_ids, experience.attention_mask, len(completion), 1.0,
                                      experience.segments)[0]
    trained = experience.mask[0].bool()
    assert torch.allclose(learner[trained], experience.rollout_logp[0][trained], atol=1e-4)


def test_a_stop_string_cuts_the_turn_before_it_and_only_the_kept_tokens_train(tiny_model):
    # through the group protocol with a written sample, so the stop string is surely in the text
    tests_agent_helpers.SEEN.clear()
    runner = runner_for(None, tiny_model, "stops_at_newline", "rollout.mode=async")
    tokenizer = runner.tokenizer
    try:
        group = runner.group(PromptBatch([{"prompt": "p", "question": "q"}], [[0]], [""]), 1,
                             SamplingSettings(8, 1.0, 1.0, seed=0))
        [(j, prompt_ids, _)] = group.start()
        assert prompt_ids == tokenizer("Count:")["input_ids"]
        ids = tokenizer(" a a\nb b", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert group.receive(j, Sample(ids, [-0.25] * len(ids), " a a\nb b", False, versions=[0] * len(ids))) == []
        [episode] = group.result()
    finally:
        runner.close()
    [reply] = tests_agent_helpers.SEEN
    kept = stop_cut(ids, lambda t: tokenizer.decode(t, skip_special_tokens=True), ["\n"])
    assert 0 < kept < len(ids) and reply.choices[0].text == " a a" and reply.choices[0].finish_reason == "stop"
    assert episode.completion_ids == ids[:kept] and episode.model_mask == [1] * kept and episode.versions == [0] * kept
    assert reply.choices[0].logprobs.token_logprobs == [-0.25] * kept


@pytest.mark.integration
def test_the_completions_endpoint_refuses_other_keys_and_unsupported_fields_in_openais_error_shape(engine, tiny_model):
    runner = runner_for(engine, tiny_model, "hangs")
    runner._start(PromptBatch([{"prompt": "p"}], [[0]], [""]), 1)  # one live episode, its agent asleep
    [key] = runner.sessions
    url = runner.endpoint.base_url + "/completions"
    body = {"model": "policy", "prompt": "hi"}
    try:
        wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer not-a-key"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        echo = httpx.post(url, json={**body, "echo": True}, headers={"Authorization": f"Bearer {key}"})
        assert echo.status_code == 400 and echo.json()["error"] == {
            "message": echo.json()["error"]["message"], "type": "invalid_request_error", "param": "echo", "code": None}
        past = httpx.post(url, json={**body, "prompt": [10**6]}, headers={"Authorization": f"Bearer {key}"})
        assert past.status_code == 400 and past.json()["error"]["param"] == "prompt"
    finally:
        runner.close()
