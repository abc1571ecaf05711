"""An episode's turns, driven with written model turns (no engine): what the environment is shown, when an episode is
truncated, how a turn's tool calls run, what reset gets, which tools a row sees."""

import pytest
import torch
from transformers import AutoTokenizer

from rlhf.agents.episodes import Episode, EpisodeRunner
from rlhf.config import compose_config, load_config
from rlhf.data import PromptBatch
from rlhf.engines.base import Sample


def runner(tiny_model, *overrides):
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "rollout.max_new_tokens=8",
                                     "env.max_episode_tokens=512", "data.max_prompt_tokens=1024",
                                     "output_dir=/tmp/unused", *overrides))
    return EpisodeRunner(None, cfg, AutoTokenizer.from_pretrained(tiny_model)), cfg


def turn(tokenizer, text: str, stop=True, truncated=False) -> Sample:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if stop else [])
    return Sample(ids, [-1.0] * len(ids), text, truncated)


def start(r, rows, group=1):
    batch = PromptBatch(rows, [[0]] * len(rows), [""] * len(rows))
    return r._start(batch, group, seed=0)


def test_the_reply_hook_is_shown_the_final_turn(tiny_model):
    # GuessNumber on its last turn: a right guess there must count (it got reward 0 before)
    r, _ = runner(tiny_model, "env.factory=rlhf.agents.tasks:GuessNumber", "env.reply=respond", "env.max_turns=1")
    [episode], [env] = start(r, [{"prompt": "Let's play."}])
    secret = env.instance.secret
    assert r._after_turn(episode, env, turn(r.tokenizer, str(secret)), last=True) is None
    r._finish(episode, env)
    assert episode.done and env.instance.solved and episode.env_reward == 1.0


def test_truncated_means_cut_by_a_budget_both_ways(tiny_model):
    r, _ = runner(tiny_model, "env.factory=tests_agent_helpers:RepeatA", "env.reply=respond", "env.max_turns=2",
                  "env.max_episode_tokens=16")
    tokenizer = r.tokenizer
    # a turn that rollout.max_new_tokens cut: the environment closes it and the episode goes on...
    [episode], [env] = start(r, [{"prompt": "p"}])
    assert r._after_turn(episode, env, turn(tokenizer, "a a a", stop=False, truncated=True), last=False)
    assert not episode.truncated and not episode.done
    # ...but a final turn so cut leaves the episode truncated
    [episode], [env] = start(r, [{"prompt": "p"}])
    r._after_turn(episode, env, turn(tokenizer, "a a a", stop=False, truncated=True), last=True)
    assert episode.done and episode.truncated
    # a turn that ends on its stop token exactly at env.max_episode_tokens: done, not truncated
    [episode], [env] = start(r, [{"prompt": "p"}])
    exact = turn(tokenizer, "a" + " a" * 14)
    assert len(exact.completion_ids) == 16
    r._after_turn(episode, env, exact, last=False)
    assert episode.done and not episode.truncated
    # one token more: cut by the episode's budget, truncated
    [episode], [env] = start(r, [{"prompt": "p"}])
    r._after_turn(episode, env, turn(tokenizer, "a" + " a" * 15), last=False)
    assert episode.done and episode.truncated and len(episode.completion_ids) == 16


def test_reset_gets_the_rows_columns_under_their_own_names(tiny_model):
    r, _ = runner(tiny_model, "env.factory=tests_agent_helpers:Quiz", "data.columns.prompt=question")
    # the stream's row: `question` mapped to the canonical `prompt`; reset gets it back as `question`
    [episode], [env] = start(r, [{"prompt": "What is 2 + 2?", "answer": "4", "index": 7}])
    assert env.instance.question == "What is 2 + 2?" and env.instance.answer == "4"
    assert episode.prompt == "What is 2 + 2? (quiz: What is 2 + 2?)"


def test_each_row_of_a_dict_of_factories_sees_only_its_environments_tools(tiny_model):
    r, _ = runner(tiny_model, "+env.factory={count: tests_agent_helpers:Counter, quiz: tests_agent_helpers:Quiz}",
                  "env.tools=[tests_agent_helpers:add]")
    episodes, envs = start(r, [{"prompt": "Count.", "environment": "count"},
                               {"prompt": "Answer.", "environment": "quiz", "answer": "a"}])
    counted, quizzed = (r.tokenizer.decode(e.prompt_ids) for e in episodes)
    assert '"increment"' in counted and '"answer_is"' not in counted and '"add"' in counted
    assert '"answer_is"' in quizzed and '"increment"' not in quizzed
    # the default data maps the prompt from `question`: reset gets it under that name
    assert type(envs[0].instance).__name__ == "Counter" and envs[1].instance.question == "Answer."
    assert r.prompt_overhead() > 0  # the data stream counts the larger of the two tool lists


def call(name, arguments="{}"):
    return f'<tool_call>{{"name": "{name}", "arguments": {arguments}}}</tool_call>'


def test_a_turns_calls_run_in_order_and_each_answer_carries_its_calls_id(tiny_model):
    r, _ = runner(tiny_model, "env.factory=tests_agent_helpers:Ledger", "env.max_tool_calls=8")
    [episode], [env] = start(r, [{"prompt": "p"}])
    text = call("write", '{"entry": "first"}') + call("write", '{"entry": "second"}') + call("read")
    answer = r._after_turn(episode, env, turn(r.tokenizer, text), last=False)
    r._answer([episode], [env], [(0, *answer)])
    assistant, *tools = episode.messages
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_0", "call_1", "call_2"]
    assert [(m["tool_call_id"], m["name"], m["content"]) for m in tools] == [
        ("call_0", "write", "1 entries"), ("call_1", "write", "2 entries"), ("call_2", "read", "first,second")]


def test_calls_over_the_turns_limit_are_answered_not_run(tiny_model):
    r, _ = runner(tiny_model, "env.factory=tests_agent_helpers:Ledger", "env.max_parallel_calls=2")
    [episode], [env] = start(r, [{"prompt": "p"}])
    text = call("write", '{"entry": "a"}') + call("write", '{"entry": "b"}') + call("write", '{"entry": "c"}')
    r._answer([episode], [env], [(0, *r._after_turn(episode, env, turn(r.tokenizer, text), last=False))])
    assert env.instance.entries == ["a", "b"] and episode.tool_errors == 1
    assert "env.max_parallel_calls" in episode.messages[-1]["content"]


def test_a_tool_that_raises_end_episode_ends_it_with_its_answer_in_the_messages(tiny_model):
    r, _ = runner(tiny_model, "env.tools=[tests_agent_helpers:finish]")
    [episode], [env] = start(r, [{"prompt": "p"}])
    answer = r._after_turn(episode, env, turn(r.tokenizer, call("finish", '{"summary": "ok"}')), last=False)
    before = len(episode.completion_ids)
    r._answer([episode], [env], [(0, *answer)])
    assert episode.done and episode.messages[-1]["content"] == "finished: ok"
    assert len(episode.completion_ids) == before  # nothing the model would read is appended


def test_a_per_turn_reward_is_credited_at_the_turns_last_model_token(tiny_model):
    r, _ = runner(tiny_model, "env.factory=tests_agent_helpers:Graded", "env.reply=reply", "env.max_turns=3")
    [episode], [env] = start(r, [{"prompt": "p"}])
    for k in range(3):
        answer = r._after_turn(episode, env, turn(r.tokenizer, "b b"), last=k == 2)
        if answer:
            r._answer([episode], [env], [(0, *answer)])
        r._turn_reward(episode, env)
    model_ends = [i for i, m in enumerate(episode.model_mask) if m and (i + 1 == len(episode.model_mask)
                                                                       or not episode.model_mask[i + 1])]
    assert episode.turn_rewards == [(model_ends[0], 0.5), (model_ends[1], 1.0), (model_ends[2], 1.5)]
    from rlhf.experience import Experience

    batch = Experience.from_samples([[0]], [[episode]], pad_id=0)  # where the estimators read them
    assert torch.nonzero(batch.turn_rewards[0]).flatten().tolist() == model_ends
    assert batch.turn_rewards[0, model_ends].tolist() == [0.5, 1.0, 1.5]


def test_dapos_overlong_punishment_counts_the_models_tokens_only(tiny_model):
    from rlhf.groups import Groups, RewardResult
    from rlhf.rollout.scoring import add_overlong_punishment

    _, cfg = runner(tiny_model, "env.tools=[tests_agent_helpers:add]", "algo=dapo",
                    "algo.sampling.overlong_fraction=0.25")
    episode = Episode([], [], "", False)
    episode.add([5] * 20, [-1.0] * 20)  # the model's 20 tokens
    episode.add([6] * 40, None)  # 40 of the environment's: 60 in all, within the last quarter of 64
    groups = Groups(PromptBatch([{"prompt": "p"}], [[0]], [""]), [[episode]], RewardResult({}, [0.0], {}))
    add_overlong_punishment(groups, cfg)
    assert groups.rewards.shaping["overlong"] == [0.0]


def test_a_row_too_long_for_an_episode_follows_data_bad_rows(tiny_model):
    from rlhf.data import PromptStream

    r, _ = runner(tiny_model, "env.tools=[tests_agent_helpers:add]")
    overhead = r.prompt_overhead()  # the tools' descriptions in the episode's system prompt
    rows = [{"prompt": "short"}, {"prompt": "word " * 40}]
    lengths = [row["_length"] for row in PromptStream(rows, r.tokenizer, None, 10_000, 0).table]
    limit = lengths[0] + overhead + 1  # the short row fits with the tools, the long one does not
    kept = PromptStream(rows, r.tokenizer, None, limit, 0, bad_rows="skip", reserved_tokens=overhead)
    assert len(kept) == 1 and lengths[1] < limit  # the long row alone would have fitted
    with pytest.raises(ValueError, match=f"an episode adds {overhead} for the tools' descriptions"):
        PromptStream(rows, r.tokenizer, None, limit, 0, bad_rows="error", reserved_tokens=overhead)


def test_another_formats_tag_without_a_read_call_is_warned_once(tiny_model, caplog):
    r, _ = runner(tiny_model, "env.tools=[tests_agent_helpers:add]")
    episodes = []
    for _ in range(2):
        [episode], [env] = start(r, [{"prompt": "p"}])
        r._after_turn(episode, env, turn(r.tokenizer, '[TOOL_CALLS] [{"name": "add"}]'), last=True)
        episodes.append(episode)
    with caplog.at_level("WARNING"):
        r._warn_other_format(episodes)
        r._warn_other_format(episodes)
    warnings = [m for m in caplog.messages if "opening tag of the 'mistral' format" in m]
    assert len(warnings) == 1 and "env.tool_format=hermes" in warnings[0]


def test_a_groups_episodes_answer_side_by_side_and_the_group_is_whole_only_once_all_are_finished(tiny_model):
    # async: each episode's turn comes back on a thread of its own; a slow tool in one holds back no other, and
    # the group is complete only once every episode's reward has been read
    import threading
    import time

    from rlhf.engines.base import SamplingSettings

    r, _ = runner(tiny_model, "env.factory=tests_agent_helpers:Counter", "env.tools=[tests_agent_helpers:hang]",
                  "env.max_turns=2", "env.tool_timeout_s=5")
    group = r.group(PromptBatch([{"prompt": "p"}], [[0]], [""]), 2, SamplingSettings(8, 1.0, 1.0, seed=0))
    group.start()
    slow = threading.Thread(target=group.receive, args=(0, turn(r.tokenizer, call("hang", '{"seconds": 1.5}'))))
    started = time.monotonic()
    slow.start()
    time.sleep(0.2)
    assert group.receive(1, turn(r.tokenizer, "done")) == [] and time.monotonic() - started < 1.0
    assert group.result() is None  # episode 0 is still in its tool
    slow.join()
    assert group.result() is None  # ...and then waits for its next turn
    assert group.receive(0, turn(r.tokenizer, "done")) == []
    assert [e.env_reward for e in group.result()] == [0.0, 0.0]
