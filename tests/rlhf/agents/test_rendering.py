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
