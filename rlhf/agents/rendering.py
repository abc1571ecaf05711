"""An episode as tokens: the prompt rendered once (with the tools), then the model's tokens as the engine sampled
them and the environment's tokens appended after them. History is never rendered or tokenized again (peers that
re-rendered lost separators and trained on tokens the engine never sampled).

The environment's tokens for new messages (tool results, a reply) are the chat template's own text for them: the
template rendered with a probe conversation and the new messages, minus the same conversation without them. That
needs a template that only appends when a turn is appended (prefix-preserving); one that re-renders earlier turns
(e.g. drops earlier reasoning) is refused at start-up. After the model's stop token the template may have more text
of its own (`<|im_end|>` then a newline): the environment's tokens begin with it; a turn cut short by the token
budget is closed by the environment with the template's whole end-of-turn text.

Tool calls are parsed by vLLM's tool parsers (`env.tool_format`, e.g. `hermes`: `<tool_call>{"name": ...,
"arguments": {...}}</tool_call>`), not by a regex of ours. Tools reach the model through the chat template's
`tools=` where the template uses them, else (`tools_prompt: system`, and `auto` for templates without tools, as
SmolLM2's) through a system prompt that lists their JSON schemas and shows the call format.
"""

import json
import logging

from rlhf.agents.tools import ToolCall
from rlhf.data.prompts import with_system

PROBE = [{"role": "user", "content": "probe"}]
MARK = "\u2063probe-content\u2063"  # an assistant content found by position in the rendered probe
SYSTEM_TOOLS = """You can call tools. To call one, write on a line of its own:
<tool_call>{{"name": "<tool name>", "arguments": {{<the arguments as a JSON object>}}}}</tool_call>
The answer comes back in a message of its own; then go on. When you are done, answer without a tool call.
The tools (JSON schemas):
{schemas}"""


# the opening tag of each tool format (vLLM's parser names): a turn carrying another format's tag than the configured
# one most likely wrote calls that env.tool_format cannot read (warned once per run)
START_TAGS = {"hermes": "<tool_call>", "mistral": "[TOOL_CALLS]", "llama3_json": "<|python_tag|>",
              "granite": "<|tool_call|>", "internlm": "<|action_start|>", "jamba": "<tool_calls>",
              "deepseek_v3": "<\uff5ctool\u2581calls\u2581begin\uff5c>", "kimi_k2": "<|tool_calls_section_begin|>",
              "qwen3_coder": "<function="}


class TemplateError(ValueError):
    """The chat template cannot carry an episode (not prefix-preserving), named with the reason."""


class Renderer:
    def __init__(self, tokenizer, tool_schemas: list[dict], tool_format: str, tools_prompt: str,
                 system_prompt: str | None, chat_template: str | None, template_kwargs: dict):
        from vllm.tool_parsers import ToolParserManager

        self.tokenizer, self.schemas, self.tool_format = tokenizer, tool_schemas, tool_format
        self.chat_template, self.kwargs = chat_template, dict(template_kwargs or {})
        self.system_prompt = system_prompt
        template = chat_template or tokenizer.chat_template or ""
        self.template_tools = tools_prompt == "template" or (tools_prompt == "auto" and "tools" in template)
        self.parser = ToolParserManager.get_tool_parser(tool_format)(tokenizer)
        # the parser logs a traceback for every malformed call; the episode counts them and tells the model instead
        logging.getLogger(type(self.parser).__module__).setLevel(logging.CRITICAL)
        self.end_of_turn = self._end_of_turn()
        self._check_prefix_preserving()

    def render(self, messages: list[dict], generation_prompt: bool, schemas: list[dict] | None = None) -> str:
        schemas = self.schemas if schemas is None else schemas
        tools = schemas if self.template_tools and schemas else None
        try:
            return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                      add_generation_prompt=generation_prompt,
                                                      chat_template=self.chat_template, **self.kwargs)
        except Exception as err:  # jinja2's own errors: said with what was being rendered
            roles = [m.get("role") + ("+tool_calls" if m.get("tool_calls") else "") for m in messages]
            raise TemplateError(f"the chat template cannot render the messages {roles}: {type(err).__name__}: {err} "
                                "(give one that can: data.chat_template)") from err

    def prompt(self, messages: list[dict], schemas: list[dict] | None = None) -> list[int]:
        """The episode's prompt tokens: the system prompt (with the tools when the template has no place for them),
        the row's messages, the generation prompt. `schemas`: the row's tools (its environment's, in
        multi-environment mode), by default every tool. Ours joins a system message the messages open with
        (`with_system`). An agent's calls (rlhf/agents/openai_agents.py) and SFT demonstrations render through here."""
        schemas = self.schemas if schemas is None else schemas
        system = [self.system_prompt] if self.system_prompt else []
        if schemas and not self.template_tools:
            system.append(SYSTEM_TOOLS.format(schemas="\n".join(json.dumps(s["function"]) for s in schemas)))
        return self.encode(self.render(with_system(messages, system), generation_prompt=True, schemas=schemas))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def raw_text(self, tokens: list[int], stopped: bool) -> str:
        """A turn's text with its special tokens (a parser's tags are special tokens in some models, and vLLM's own
        parsers read them), less the stop token that ended it."""
        return self.tokenizer.decode(tokens[:-1] if stopped and tokens else tokens, skip_special_tokens=False)

    def parse(self, text: str) -> tuple[str, list[ToolCall], bool]:
        """(the turn's content before any tool call, its tool calls, whether it tried a call that did not parse).
        `text`: the turn's raw text (`raw_text`)."""
        extracted = self.parser.extract_tool_calls(text, None)
        if not extracted.tools_called:
            return text, [], getattr(self.parser, "tool_call_start_token", "<tool_call>") in text
        calls = [ToolCall(c.function.name, c.function.arguments) for c in extracted.tool_calls]
        return extracted.content or "", calls, False

    def other_format(self, text: str) -> str | None:
        """The tool format whose opening tag `text` carries, when it is not env.tool_format's."""
        return next((name for name, tag in START_TAGS.items() if tag in text and name != self.tool_format
                     and tag != START_TAGS.get(self.tool_format)), None)

    def environment_tokens(self, stop_token: int | None, messages: list[dict]) -> list[int]:
        """The tokens after a model turn that ended on `stop_token` (None: cut short) for the environment's new
        `messages`, up to the next generation prompt."""
        stop_text = self.tokenizer.decode([stop_token]) if stop_token is not None else ""
        closing = self.end_of_turn[len(stop_text):] if stop_text and self.end_of_turn.startswith(stop_text) \
            else self.end_of_turn
        return self.encode(closing + self._appended(messages))

    def _appended(self, messages: list[dict]) -> str:
        head = self.render([*PROBE, {"role": "assistant", "content": MARK}], generation_prompt=False)
        full = self.render([*PROBE, {"role": "assistant", "content": MARK}, *messages], generation_prompt=True)
        if not full.startswith(head):
            raise TemplateError("the chat template renders the conversation before a new turn differently once the "
                                "turn is appended (it is not prefix-preserving): an episode appends tokens and never "
                                "renders its history again; give a template that only appends (data.chat_template)")
        return full[len(head):]

    def _end_of_turn(self) -> str:
        """The template's text after an assistant turn's content (e.g. `<|im_end|>` and a newline)."""
        rendered = self.render([*PROBE, {"role": "assistant", "content": MARK}], generation_prompt=False)
        if MARK not in rendered:
            raise TemplateError("the chat template does not render an assistant turn's content as it is")
        return rendered[rendered.index(MARK) + len(MARK):]

    def _check_prefix_preserving(self) -> None:
        """An episode's history as it renders must stay its prefix: checked after a plain assistant turn and, as TRL
        checks, after one that carries tool calls (templates that render calls, as Qwen3's and GPT-OSS's, are judged
        on what an episode holds)."""
        self._appended([{"role": "tool", "name": "probe", "tool_call_id": "call_0", "content": "result"}])
        self._appended([{"role": "user", "content": "reply"}])
        if not self.schemas:
            return
        call = {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "probe", "arguments": {}}}]}
        head = self.render([*PROBE, call], generation_prompt=False)
        full = self.render([*PROBE, call, {"role": "tool", "name": "probe", "tool_call_id": "call_0",
                                           "content": "result"}], generation_prompt=True)
        if not full.startswith(head):
            raise TemplateError("the chat template renders an assistant turn with tool calls differently once a tool "
                                "answer follows it (it is not prefix-preserving): an episode appends tokens and never "
                                "renders its history again; give a template that only appends (data.chat_template)")
