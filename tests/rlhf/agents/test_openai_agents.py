"""Agents written against the OpenAI client (env.agent), trained unchanged: the real `openai` client against the
run's endpoint, on a real engine (the HF engine, tiny model)."""

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import tests_agent_helpers
from rlhf.agents.openai_agents import AgentFailure, AgentRunner
from rlhf.config import compose_config, load_config
from rlhf.data import PromptBatch
from rlhf.engines.base import SamplingSettings
from rlhf.rollout.timing import NO_TIMER
from tests_ray_helpers import wait_until

pytestmark = pytest.mark.integration


def play(engine, tiny_model, agent, *overrides, rows=1, group=2):
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", f"env.agent=tests_agent_helpers:{agent}",
                                     "rollout.max_new_tokens=8", "env.max_episode_tokens=256",
                                     "data.max_prompt_tokens=900", "output_dir=/tmp/unused", *overrides))
    runner = AgentRunner(engine, cfg, AutoTokenizer.from_pretrained(tiny_model))
    batch = PromptBatch([{"prompt": f"Say a, request {i}."} for i in range(rows)], [[0]] * rows, [""] * rows)
    try:
        groups = runner.rollout(batch, group, SamplingSettings(8, 1.0, 1.0, seed=3), None, NO_TIMER)
        return groups, runner
    finally:
        runner.close()


def test_an_agents_tokens_are_the_engines_with_the_learners_logprobs(engine, tiny_model):
    tests_agent_helpers.SEEN.clear()
    groups, runner = play(engine, tiny_model, "two_calls")
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    for episode, (first, second) in zip(groups[0], tests_agent_helpers.SEEN):
        assert episode.turns == 2 and episode.segments == 1 and not episode.failed and episode.env_reward == 1.0
        assert [m["role"] for m in episode.messages] == ["assistant", "tool", "assistant"]
        # the model's tokens are the two turns' sampled tokens, their logprobs what the client was given...
        given = [t.logprob for reply in (first, second) for t in reply.choices[0].logprobs.content]
        model_logprobs = [lp for lp, m in zip(episode.logprobs, episode.model_mask) if m]
        assert model_logprobs == pytest.approx(given, abs=1e-6) and len(given) == sum(episode.model_mask)
        # ...and the learner's, the environment's tokens as context (fp32 HF engine: within 1e-4)
        ids = torch.tensor([episode.prompt_ids + episode.completion_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(episode.prompt_ids) - 1:-1]
        learner = torch.log_softmax(logits.float(), -1).gather(1, ids[0, len(episode.prompt_ids):, None])[:, 0]
        mask = torch.tensor(episode.model_mask, dtype=torch.bool)
        assert torch.allclose(learner[mask], torch.tensor(model_logprobs), atol=1e-4)
        # between the turns only the tool's answer, as the template writes it after the model's turn
        assert 0 < len(episode.model_mask) - sum(episode.model_mask)
    metrics = runner.metrics(groups)
    assert metrics["rollout/turns"] == 2 and metrics["rollout/agent_segments"] == 1


def test_an_agent_that_rewrites_its_history_starts_a_segment_and_a_sync_agent_runs_in_a_thread(engine, tiny_model):
    groups, runner = play(engine, tiny_model, "rewrites")
    assert [e.segments for e in groups[0]] == [2, 2] and all(e.env_reward == {"said": 0.5} for e in groups[0])
    # reward functions see the last segment's conversation (every segment trains: test_agent_segments.py)
    assert all(e.prompt[0]["content"].startswith("Earlier you said") for e in groups[0])
    groups, _ = play(engine, tiny_model, "sync_agent")
    assert all(e.turns == 1 and not e.failed for e in groups[0])


def test_a_hanging_agent_is_a_failed_episode_and_most_failing_stops_the_run(engine, tiny_model):
    groups, runner = play(engine, tiny_model, "hangs", "env.agent_timeout_s=1")
    assert all(e.failed == "timed out after env.agent_timeout_s=1 s" and e.env_reward is None for e in groups[0])
    with pytest.raises(AgentFailure, match="2 of 2 episodes of the step failed"):
        runner.metrics(groups)


def test_the_endpoint_refuses_other_keys_and_unknown_fields_in_openais_error_shape(engine, tiny_model):
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "env.agent=tests_agent_helpers:hangs",
                                     "output_dir=/tmp/unused"))
    runner = AgentRunner(engine, cfg, AutoTokenizer.from_pretrained(tiny_model))
    runner._start(PromptBatch([{"prompt": "p"}], [[0]], [""]), 1)  # one live episode, its agent asleep
    [key] = runner.sessions
    url = runner.endpoint.base_url + "/chat/completions"
    body = {"model": "policy", "messages": [{"role": "user", "content": "hi"}]}
    try:
        wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer not-a-key"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        unknown = httpx.post(url, json={**body, "frequency_penalty": 1}, headers={"Authorization": f"Bearer {key}"})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["param"] == "frequency_penalty" and "not supported" in unknown.json()["error"]["message"]
        two = httpx.post(url, json={**body, "n": 2}, headers={"Authorization": f"Bearer {key}"})
        assert two.status_code == 400 and two.json()["error"]["param"] == "n"
        assert runner.endpoint.host == "127.0.0.1"  # loopback only
    finally:
        session = runner.sessions[key]
        runner.close()
    # the agent still asleep is cancelled with the runner, not left in the process's event loop until its timeout
    wait_until(lambda: session.done, "the hanging agent's episode to end", timeout_s=10)
    assert session.play.cancelled() and not runner.sessions


def test_async_each_call_streams_to_the_engine_as_its_agent_makes_it(tiny_model):
    # what the async producer does with a group (rlhf/rollout/asynchronous.py): start, then receive each request's
    # sample, sending on what comes back; the samples here are written, the agent and the endpoint are real
    from rlhf.engines.base import Sample

    tests_agent_helpers.SEEN.clear()
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "env.agent=tests_agent_helpers:two_calls",
                                     "rollout.mode=async", "env.max_episode_tokens=256", "data.max_prompt_tokens=900",
                                     "output_dir=/tmp/unused"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    runner = AgentRunner(None, cfg, tokenizer)
    try:
        group = runner.group(PromptBatch([{"prompt": "Say a."}], [[0]], [""]), 2, SamplingSettings(8, 1.0, 1.0, seed=0))
        requests = group.start()  # each agent's first call
        assert sorted(j for j, _, _ in requests) == [0, 1] and {s.max_new_tokens for _, _, s in requests} == {6}
        sent = 0
        while requests:
            j, prompt_ids, _ = requests.pop(0)
            ids = tokenizer("a a", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            assert group.result() is None
            requests += group.receive(j, Sample(ids, [-0.5] * len(ids), "a a", False, versions=[sent] * len(ids)))
            sent += 1
        episodes = group.result()
        assert sent == 4 and all(e.turns == 2 and not e.failed and e.env_reward == 1.0 for e in episodes)
        assert all(e.versions and len(e.versions) == len(e.completion_ids) for e in episodes)  # each token's weights
    finally:
        runner.close()
