"""Demonstrations as tokens: the targets are exactly the assistant's tokens, and the whole sequence is token for token
what an episode holds when the model writes the demonstration's turns (the same chat template and tool prompt)."""

import json

import pytest
from transformers import AutoTokenizer

from rlhf.config import compose_config, load_config
from rlhf.data import PromptBatch
from rlhf.engines.base import Sample, SamplingSettings
from rlhf.rollout.timing import NO_TIMER
from rlhf.sft.data import Preparation, make_renderer
from rlhf.sft.rendering import DemonstrationError, conversation

QUESTION = "What is 12 * 7 + 3?"
CALL = {"id": "call_0", "type": "function", "function": {"name": "calculator", "arguments": {"expression": "12 * 7 + 3"}}}
TOOL_CONVERSATION = [
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": "I will compute it.", "tool_calls": [CALL]},
    {"role": "tool", "name": "calculator", "content": "87", "tool_call_id": "call_0"},
    {"role": "assistant", "content": "The answer is 87."},
]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say a."},
    {"role": "assistant", "content": "a"},
    {"role": "user", "content": "Again, twice."},
    {"role": "assistant", "content": "a a"},
]


def config(model, *overrides):
    return load_config(compose_config("model=path", f"model.path={model}", "output_dir=/tmp/unused",
                                      "env.max_episode_tokens=400", *overrides))


def demonstration(model, row, *overrides):
    cfg = config(model, *overrides)
    tokenizer = AutoTokenizer.from_pretrained(model)
    renderer, schemas = make_renderer(cfg, cfg.data, tokenizer)
    conv = conversation(row)
    if conv.schemas is None and schemas is not None:
        conv.schemas = schemas(row)
    return renderer.tokens(conv), renderer, tokenizer, cfg


def segments(ids, mask):
    """Runs of (is_target, tokens)."""
    out = []
    for token, m in zip(ids, mask):
        if not out or out[-1][0] != m:
            out.append((m, []))
        out[-1][1].append(token)
    return out


@pytest.mark.parametrize("model", ["tiny", "smollm2"])
def test_a_multi_turn_chat_trains_exactly_the_assistant_turns(model, tiny_model):
    path = tiny_model if model == "tiny" else smollm2_path()
    tokens, renderer, tokenizer, _ = demonstration(path, {"messages": CHAT})
    eos = tokenizer.eos_token_id
    runs = segments(tokens.ids, tokens.mask)
    assert [m for m, _ in runs] == [0, 1, 0, 1]
    prompt, first, reply, second = (t for _, t in runs)
    # the prompt is the episode's: the template's rendering of system and user with the generation prompt
    assert prompt == tokenizer(tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True),
                               add_special_tokens=False)["input_ids"]
    assert len(prompt) == tokens.prompt_length
    # each assistant turn: its text's tokens and the stop token, nothing of the template around it
    assert first == tokenizer("a", add_special_tokens=False)["input_ids"] + [eos]
    assert second == tokenizer("a a", add_special_tokens=False)["input_ids"] + [eos]
    # between them exactly what an episode appends after the model's stop for a user turn
    assert reply == renderer.renderer.environment_tokens(eos, [CHAT[3]])
    # and the whole sequence reads as the template renders the conversation (without the last turn's closing text)
    full = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert tokenizer.decode(tokens.ids) == full[:len(full) - len(renderer.renderer.end_of_turn)] + tokenizer.eos_token


def smollm2_path() -> str:
    from rlhf.models import resolve_model_path

    return resolve_model_path("smollm2", None)


def test_a_tool_conversation_is_the_episode_the_model_would_play(tiny_model, monkeypatch):
    """The demonstration's assistant turns, written by a scripted engine into a real episode (the calculator runs):
    the episode's prompt and tokens equal the demonstration's, and its model mask is the target mask."""
    overrides = ["env.tools=[rlhf.agents.tools:calculator]", "data.system_prompt=Use the calculator.",
                 "data.max_prompt_tokens=1024"]
    tokens, renderer, tokenizer, cfg = demonstration(tiny_model, {"messages": TOOL_CONVERSATION}, *overrides)
    eos = tokenizer.eos_token_id
    turns = [t for m, t in segments(tokens.ids, tokens.mask) if m]
    assert len(turns) == 2 and all(t[-1] == eos for t in turns)
    # the first turn writes the call as the tools' system prompt shows it (SmolLM2-like templates render no calls)
    first = tokenizer.decode(turns[0][:-1])
    assert first == 'I will compute it.\n<tool_call>{"name": "calculator", "arguments": {"expression": "12 * 7 + 3"}}' \
                    '</tool_call>'

    from rlhf.agents.episodes import EpisodeRunner

    scripted = iter(turns)

    def engine(actors, prompts, n, sampling, version=None):
        out = []
        for _ in prompts:
            ids = next(scripted)
            out.append([Sample(ids, [-0.5] * len(ids), tokenizer.decode(ids[:-1]), False)])
        return out

    monkeypatch.setattr("rlhf.rollout.generation.generate", engine)
    runner = EpisodeRunner(None, cfg, tokenizer)
    batch = PromptBatch([{"prompt": QUESTION}], [[0]], [""])
    [[episode]] = runner.rollout(batch, 1, SamplingSettings(64, 1.0, 1.0, seed=0), None, NO_TIMER)
    runner.close()
    assert episode.tool_calls == 1 and episode.tool_errors == 0 and episode.turns == 2
    assert episode.prompt_ids == tokens.ids[:tokens.prompt_length]
    assert episode.prompt_ids + episode.completion_ids == tokens.ids
    assert [0] * len(episode.prompt_ids) + episode.model_mask == tokens.mask
    # the episode's messages are the demonstration's (TRL's completions shape)
    assert episode.messages[0]["tool_calls"][0]["function"] == CALL["function"]
    assert episode.messages[1]["content"] == "87" and episode.messages[2]["content"] == "The answer is 87."


def test_the_openai_examples_demonstration_is_the_episode_its_agent_plays(tiny_model, monkeypatch):
    """experiment=calculator_openai's warm start: a demonstration of examples/calculator_openai.py (its system prompt
    and tool schema), its assistant turns written by a scripted engine into an episode of that agent, played through
    the run's endpoint with the real openai client: the episode's tokens are the demonstration's, its model mask the
    target mask, one segment."""
    from examples.calculator_openai import demonstrations
    from rlhf.agents.openai_agents import AgentRunner

    row = demonstrations(size=1, seed=3)[0]
    overrides = ["experiment=calculator_openai", "data.max_prompt_tokens=1024"]
    tokens, renderer, tokenizer, cfg = demonstration(tiny_model, row, *overrides)
    turns = [t for m, t in segments(tokens.ids, tokens.mask) if m]
    assert len(turns) == 2 and tokenizer.decode(turns[0]).startswith('<tool_call>{"name": "calculator"')
    scripted = iter(turns)

    def engine(actors, prompts, n, sampling, version=None):
        return [[Sample(ids, [-0.5] * len(ids), tokenizer.decode(ids[:-1]), False)]
                for ids in (next(scripted) for _ in prompts)]

    monkeypatch.setattr("rlhf.rollout.generation.generate", engine)
    runner = AgentRunner(None, cfg, tokenizer)
    question = row["messages"][1]["content"]
    batch = PromptBatch([{"prompt": question, "answer": row["answer"]}], [[0]], [""])
    try:
        [[episode]] = runner.rollout(batch, 1, SamplingSettings(64, 1.0, 1.0, seed=0), None, NO_TIMER)
    finally:
        runner.close()
    assert not episode.failed and episode.turns == 2 and episode.segments == 1 and episode.env_reward == 1.0
    assert episode.prompt_ids == tokens.ids[:tokens.prompt_length]
    assert episode.prompt_ids + episode.completion_ids == tokens.ids
    assert [0] * len(episode.prompt_ids) + episode.model_mask == tokens.mask


def test_a_template_that_renders_tool_calls_trains_its_own_rendering(tiny_model, tmp_path):
    """A template with a place for tool calls (Qwen's kind): the turn is the template's text, and the parser reads
    the call back from it."""
    template = tmp_path / "tools.jinja"
    template.write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% for c in m.get('tool_calls', []) %}\n<tool_call>\n{{ c['function'] | tojson }}\n</tool_call>{% endfor %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tokens, renderer, tokenizer, _ = demonstration(tiny_model, {"messages": TOOL_CONVERSATION},
                                                   "env.tools=[rlhf.agents.tools:calculator]",
                                                   f"data.chat_template={template}")
    first = [t for m, t in segments(tokens.ids, tokens.mask) if m][0]
    text = tokenizer.decode(first[:-1])
    # (transformers renders templates with trim_blocks: no newline after the loop's tag)
    assert text == 'I will compute it.<tool_call>\n{"name": "calculator", "arguments": {"expression": "12 * 7 + 3"}}' \
                   '\n</tool_call>'
    assert text in tokenizer.apply_chat_template(TOOL_CONVERSATION, tokenize=False, chat_template=template.read_text())


def test_prompt_and_completion_train_the_completion_only(tiny_model):
    tokens, renderer, tokenizer, _ = demonstration(tiny_model, {"prompt": "Say a.", "completion": "a a a"})
    runs = segments(tokens.ids, tokens.mask)
    assert [m for m, _ in runs] == [0, 1]
    assert runs[1][1] == tokenizer("a a a", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    # a single-turn RL prompt is rendered alike (PromptStream's chat template with the generation prompt)
    assert runs[0][1] == tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": "Say a."}],
                                   tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    # turned off, every token but the first is a target (TRL)
    every, *_ = demonstration(tiny_model, {"prompt": "Say a.", "completion": "a a a"}, "sft.completion_only_loss=false")
    assert every.ids == tokens.ids and every.mask == [0] + [1] * (len(tokens.ids) - 1)
    # references: the first is the completion (BLEUBERI's SFT on the RL data)
    same, *_ = demonstration(tiny_model, {"prompt": "Say a.", "references": ["a a a", "b"]})
    assert same.ids == tokens.ids and same.mask == tokens.mask


def test_conversational_prompt_and_completion(tiny_model):
    row = {"prompt": CHAT[:4], "completion": [CHAT[4]]}
    tokens, *_ = demonstration(tiny_model, row)
    chat, *_ = demonstration(tiny_model, {"messages": CHAT})
    # the prompt's assistant turn is context here, a target in the conversation
    assert tokens.ids[-3:] == chat.ids[-3:] and sum(tokens.mask) < sum(chat.mask)


@pytest.mark.parametrize("row, problem", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({"messages": [*CHAT, {"role": "user", "content": "and?"}]}, "ends with a user turn"),
    ({"prompt": "hi"}, "needs `messages`"),
    ({"prompt": "hi", "completion": [{"role": "tool", "content": "x"}]}, "begins with a tool turn"),
    ({"messages": TOOL_CONVERSATION, "tools": "not json"}, "tools is not JSON"),
])
def test_rows_that_cannot_be_demonstrations(row, problem, tiny_model):
    with pytest.raises(DemonstrationError, match=problem):
        demonstration(tiny_model, row)


def test_a_tools_column_is_shown_in_the_prompt(tiny_model):
    schema = {"type": "function", "function": {"name": "lookup", "description": "Look a word up.",
                                               "parameters": {"type": "object", "properties": {
                                                   "word": {"type": "string", "description": "The word."}},
                                                   "required": ["word"]}}}
    row = {"messages": TOOL_CONVERSATION, "tools": json.dumps([schema])}
    tokens, renderer, tokenizer, _ = demonstration(tiny_model, row)
    prompt = tokenizer.decode(tokens.ids[:tokens.prompt_length])
    assert '"name": "lookup"' in prompt and "calculator" not in prompt.split("<|im_start|>user")[0]


def test_over_budget_rows_follow_bad_rows_or_are_cut(tiny_model):
    cfg = config(tiny_model, "rollout.max_new_tokens=8", "data.max_prompt_tokens=64")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    renderer, _ = make_renderer(cfg, cfg.data, tokenizer)
    long = {"prompt": "Say a.", "completion": "a " * 40}
    strict = Preparation(renderer, None, {}, 64, 8, "rollout.max_new_tokens", truncate=False).row(long, 0)
    assert "more than rollout.max_new_tokens=8" in strict["_problem"]
    cut = Preparation(renderer, None, {}, 64, 8, "rollout.max_new_tokens", truncate=True).row(long, 0)
    assert not cut["_problem"] and cut["_truncated"] and cut["_length"] == cut["_prompt_length"] + 8
    tight = Preparation(renderer, None, {}, 4, 8, "rollout.max_new_tokens", truncate=True).row(long, 0)
    assert "data.max_prompt_tokens=4" in tight["_problem"]
