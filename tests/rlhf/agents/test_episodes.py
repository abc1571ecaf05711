"""Episodes on a real engine (the HF engine, tiny model): the model's tokens as sampled, the environment's appended
as the template's text, a group from one initial state."""

import pytest
from transformers import AutoTokenizer

from rlhf.agents.episodes import EpisodeRunner, episode_metrics
from rlhf.config import compose_config, load_config
from rlhf.data import PromptBatch
from rlhf.engines.base import SamplingSettings
from rlhf.rollout.timing import NO_TIMER

pytestmark = pytest.mark.integration


def run(engine, tiny_model, *overrides, rows=1, group=2, seed=3):
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "rollout.max_new_tokens=8",
                                     "env.max_episode_tokens=160", "output_dir=/tmp/unused", *overrides))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    runner = EpisodeRunner(engine, cfg, tokenizer)
    batch = PromptBatch([{"prompt": f"Say a, request {i}."} for i in range(rows)], [[0]] * rows, [""] * rows)
    groups = runner.rollout(batch, group, SamplingSettings(8, 1.0, 1.0, seed=seed), None, NO_TIMER)
    runner.close()
    return groups, runner, tokenizer


def test_an_episode_is_the_engines_tokens_with_the_templates_text_between_them(engine, tiny_model):
    groups, runner, tokenizer = run(engine, tiny_model, "env.factory=tests_agent_helpers:RepeatA", "env.reply=respond", "env.max_turns=3")
    for episode in groups[0]:
        assert episode.turns == 2  # RepeatA asks once more, then ends
        # truncated exactly when the final turn ran out of its budget (rollout.max_new_tokens=8)
        assert episode.truncated == (episode.completion_ids[-1] != tokenizer.eos_token_id)
        assert len(episode.completion_ids) == len(episode.logprobs) == len(episode.model_mask)
        # the model's tokens, turn by turn, are what the engine sampled (their text is each assistant turn); between
        # them, exactly the template's text for the reply, after the model's stop (or closing a turn cut short)
        segments, current = [], [episode.model_mask[0], []]
        for token, is_model in zip(episode.completion_ids, episode.model_mask):
            if is_model != current[0]:
                segments.append(current)
                current = [is_model, []]
            current[1].append(token)
        segments.append(current)
        assert [kind for kind, _ in segments] == [1, 0, 1]
        first, reply, second = (tokens for _, tokens in segments)
        assert tokenizer.decode(first, skip_special_tokens=True) == episode.messages[0]["content"]
        assert tokenizer.decode(second, skip_special_tokens=True) == episode.messages[2]["content"]
        stop = first[-1] if first[-1] == tokenizer.eos_token_id else None
        assert reply == runner.renderer.environment_tokens(stop, [{"role": "user", "content": "Again."}])
        assert [m["role"] for m in episode.messages] == ["assistant", "user", "assistant"]
        # the engine's logprobs on the model's tokens, none on the environment's
        assert all(lp < 0 for lp, m in zip(episode.logprobs, episode.model_mask) if m)
        assert all(lp == 0 for lp, m in zip(episode.logprobs, episode.model_mask) if not m)
        assert episode.env_reward is not None and episode.text == episode.messages[-1]["content"]
    metrics = episode_metrics(groups)
    assert metrics["rollout/turns"] == 2 and metrics["rollout/env_tokens"] > 0 and metrics["rollout/tool_calls"] == 0


def test_a_group_starts_from_one_state_and_groups_from_their_own(engine, tiny_model):
    groups, _, tokenizer = run(engine, tiny_model, "env.factory=tests_agent_helpers:Secret", "env.max_turns=1",
                               rows=2, group=3)
    prompts = [[tokenizer.decode(e.prompt_ids) for e in group] for group in groups]
    assert all(len(set(group)) == 1 for group in prompts)  # random is seeded per group before reset
    assert prompts[0][0] != prompts[1][0] and "The secret is" in prompts[0][0]


def test_the_episode_budget_ends_an_episode_truncated(engine, tiny_model):
    groups, _, _ = run(engine, tiny_model, "env.factory=tests_agent_helpers:RepeatA", "env.reply=respond", "env.max_turns=3",
                       "env.max_episode_tokens=10", "rollout.max_new_tokens=8")
    for episode in groups[0]:
        assert len(episode.completion_ids) <= 10 and episode.truncated


def test_a_turns_tool_calls_run_and_come_back_as_the_templates_tool_turns(engine, tiny_model):
    # the tiny random model calls no tool: the turn's calls are read from a written answer, then run for real
    from rlhf.agents.episodes import Episode, MALFORMED
    from rlhf.agents.tools import ToolResult

    _, runner, tokenizer = run(engine, tiny_model, "env.tools=[tests_agent_helpers:add,tests_agent_helpers:explode]",
                               "env.max_tool_calls=2", "env.max_turns=1", "data.max_prompt_tokens=1024")
    runner.runner = type(runner.runner)(1.0, 32, tokenizer, 4, "middle")
    text = ('<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'
            '<tool_call>{"name": "explode", "arguments": {"reason": "x"}}</tool_call>'
            '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 1}}</tool_call>')
    _, calls, malformed = runner.renderer.parse(text)
    assert len(calls) == 3 and not malformed
    episodes = [Episode([], [], "", False), Episode([], [], "", False)]
    eos = tokenizer.eos_token_id
    runner._answer(episodes, [None, None], [(0, eos, "tools", calls),
                                            (1, eos, "error", [ToolResult("tool_call", MALFORMED, True)])])
    runner.close()
    answered = episodes[0]
    assert [m["content"] for m in answered.messages] == [
        "5", "{'error': 'RuntimeError: boom: x'}",
        "{'error': 'not run: an episode makes at most 2 tool calls (env.max_tool_calls)'}"]
    assert answered.tool_calls == 3 and answered.tool_errors == 2 and set(answered.model_mask) == {0}
    assert answered.completion_ids == runner.renderer.environment_tokens(eos, answered.messages)
    assert episodes[1].tool_errors == 1 and "could not be read" in episodes[1].messages[0]["content"]
