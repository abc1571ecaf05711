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

PROBE = [{"role": "user", "content": "probe"}]
MARK = "\u2063probe-content\u2063"  # an assistant content found by position in the rendered probe
SYSTEM_TOOLS = """You can call tools. To call one, write on a line of its own:
<tool_call>{{"name": "<tool name>", "arguments": {{<the arguments as a JSON object>}}}}</tool_call>
The answer comes back in a message of its own; then go on. When you are done, answer without a tool call.
The tools (JSON schemas):
{schemas}"""


class TemplateError(ValueError):
    """The chat template cannot carry an episode (not prefix-preserving), named with the reason."""


class Renderer:
    def __init__(self, tokenizer, tool_schemas: list[dict], tool_format: str, tools_prompt: str,
                 system_prompt: str | None, chat_template: str | None, template_kwargs: dict):
        from vllm.tool_parsers import ToolParserManager

        self.tokenizer, self.schemas = tokenizer, tool_schemas
        self.chat_template, self.kwargs = chat_template, dict(template_kwargs or {})
        self.system_prompt = system_prompt
        template = chat_template or tokenizer.chat_template or ""
        self.template_tools = tools_prompt == "template" or (tools_prompt == "auto" and "tools" in template)
        self.parser = ToolParserManager.get_tool_parser(tool_format)(tokenizer)
        # the parser logs a traceback for every malformed call; the episode counts them and tells the model instead
        logging.getLogger(type(self.parser).__module__).setLevel(logging.CRITICAL)
        self.end_of_turn = self._end_of_turn()
        self._check_prefix_preserving()

    def render(self, messages: list[dict], generation_prompt: bool) -> str:
        tools = self.schemas if self.template_tools and self.schemas else None
        return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                  add_generation_prompt=generation_prompt,
                                                  chat_template=self.chat_template, **self.kwargs)

    def prompt(self, messages: list[dict]) -> list[int]:
        """The episode's prompt tokens: the system prompt (with the tools when the template has no place for them),
        the row's messages, the generation prompt."""
        system = [self.system_prompt] if self.system_prompt else []
        if self.schemas and not self.template_tools:
            system.append(SYSTEM_TOOLS.format(schemas="\n".join(json.dumps(s["function"]) for s in self.schemas)))
        if system:
            messages = [{"role": "system", "content": "\n\n".join(system)}, *messages]
        return self.encode(self.render(messages, generation_prompt=True))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def parse(self, text: str) -> tuple[str, list[ToolCall], bool]:
        """(the turn's content before any tool call, its tool calls, whether it tried a call that did not parse)."""
        extracted = self.parser.extract_tool_calls(text, None)
        if not extracted.tools_called:
            return text, [], getattr(self.parser, "tool_call_start_token", "<tool_call>") in text
        calls = [ToolCall(c.function.name, c.function.arguments) for c in extracted.tool_calls]
        return extracted.content or "", calls, False

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
        self._appended([{"role": "tool", "name": "probe", "content": "result"}])
        self._appended([{"role": "user", "content": "reply"}])
