"""An episode's tokens: the template's own text appended after the model's tokens, tool calls read by vLLM's
parser, templates that re-render history refused."""

import pytest
from transformers import AutoTokenizer

from rlhf.agents.rendering import Renderer, TemplateError
from rlhf.agents.tools import tool_from_function
from tests_agent_helpers import add


def renderer(tiny_model, chat_template=None, schemas=True):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    return Renderer(tokenizer, [tool_from_function(add).schema] if schemas else [], "hermes", "auto", None,
                    chat_template, {}), tokenizer


def test_the_environments_tokens_are_the_templates_text_after_the_models(tiny_model):
    r, tokenizer = renderer(tiny_model)
    eos = tokenizer.eos_token_id  # <|im_end|>: the model stopped; the template's newline after it is the env's
    tokens = r.environment_tokens(eos, [{"role": "tool", "name": "add", "content": "5"}])
    assert tokenizer.decode(tokens) == "\n<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\n"
    cut = r.environment_tokens(None, [{"role": "user", "content": "go on"}])  # cut short: the env closes the turn
    assert tokenizer.decode(cut) == "<|im_end|>\n<|im_start|>user\ngo on<|im_end|>\n<|im_start|>assistant\n"


def test_a_template_without_tools_gets_them_in_a_system_prompt(tiny_model):
    r, tokenizer = renderer(tiny_model)
    text = tokenizer.decode(r.prompt([{"role": "user", "content": "2 plus 3?"}]))
    assert text.startswith("<|im_start|>system\nYou can call tools.") and '"name": "add"' in text
    assert text.endswith("<|im_start|>user\n2 plus 3?<|im_end|>\n<|im_start|>assistant\n")


def test_a_conversation_with_its_own_system_message_keeps_one_system_message(tiny_model):
    # an agent's call (or a data row) opening with a system message: ours (data.system_prompt, the tools) joins it
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    r = Renderer(tokenizer, [tool_from_function(add).schema], "hermes", "auto", "Be exact.", None, {})
    text = tokenizer.decode(r.prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}]))
    assert text.count("<|im_start|>system") == 1
    assert text.startswith("<|im_start|>system\nBe brief.\n\nBe exact.\n\nYou can call tools.")


def test_tool_calls_are_read_by_vllms_parser_and_malformed_ones_are_seen(tiny_model):
    r, _ = renderer(tiny_model)
    content, calls, malformed = r.parse('Let me add. <tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}'
                                        '</tool_call>')
    assert content.strip() == "Let me add." and not malformed
    assert [(c.name, c.arguments) for c in calls] == [("add", '{"a": 2, "b": 3}')]
    assert r.parse("The answer is 5.") == ("The answer is 5.", [], False)
    assert r.parse('<tool_call>{"name": add</tool_call>')[1:] == ([], True)


def test_a_template_that_re_renders_history_is_refused(tiny_model, tmp_path):
    # it drops every assistant turn but the last, as templates that strip earlier reasoning do
    forgetful = ("{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}<|im_start|>{{ m['role'] }}\n"
                 "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateError, match="not prefix-preserving"):
        renderer(tiny_model, chat_template=forgetful)


def test_a_template_that_renders_tool_calls_is_probed_with_one_and_refused_with_the_reason(tiny_model):
    # renders an assistant's tool calls only while it is the last message: an episode's history would change
    hides_calls = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                   "{% if m.tool_calls and loop.last %}<tool_call>{{ m.tool_calls[0].function.name }}</tool_call>"
                   "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateError, match="an assistant turn with tool calls differently"):
        renderer(tiny_model, chat_template=hides_calls)
    renderer(tiny_model, chat_template=hides_calls, schemas=False)  # without tools no episode holds a call


def test_a_template_that_raises_is_refused_naming_what_it_rendered_never_a_raw_jinja_error(tiny_model):
    no_tool_role = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tool role') }}"
                    "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TemplateError, match=r"cannot render the messages \['user', 'assistant', 'tool'\]: "
                                            r"TemplateError: no tool role"):
        renderer(tiny_model, chat_template=no_tool_role)


def test_the_parser_reads_the_turns_raw_text_with_its_special_tokens(tiny_model):
    r, tokenizer = renderer(tiny_model)
    # a model whose call tags are special tokens: skip_special_tokens would erase them before the parser
    tokenizer.add_special_tokens({"additional_special_tokens": ["<tool_call>", "</tool_call>"]})
    ids = tokenizer('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>',
                    add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert "<tool_call>" not in tokenizer.decode(ids, skip_special_tokens=True)
    _, calls, _ = r.parse(r.raw_text(ids, stopped=True))
    assert [(c.name, c.arguments) for c in calls] == [("add", '{"a": 1, "b": 2}')]
    assert r.other_format("[TOOL_CALLS] add") == "mistral" and r.other_format("<tool_call>") is None


def test_trls_training_template_makes_a_family_whose_template_re_renders_history_usable(tiny_model):
    # Qwen3's template drops earlier turns' reasoning (not prefix-preserving); TRL ships a training template for it
    from pathlib import Path

    import trl

    from rlhf.data.prompts import read_chat_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    schemas = [tool_from_function(add).schema]
    with pytest.raises(TemplateError, match="not prefix-preserving"):
        Renderer(tokenizer, schemas, "hermes", "auto", None, None, {})
    training = read_chat_template("training", tokenizer)
    assert training and training != tokenizer.chat_template
    Renderer(tokenizer, schemas, "hermes", "auto", None, training, {})  # accepted
    tokenizer.chat_template = "{{ messages[0]['content'] }}"  # a family TRL does not know: named, not a jinja error
    with pytest.raises(ValueError, match="data.chat_template=training: TRL ships no training template"):
        read_chat_template("training", tokenizer)
