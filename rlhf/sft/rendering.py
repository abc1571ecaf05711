"""A demonstration as the tokens an episode would hold: rendered by the same chat template and tool prompt an RL run
uses (rlhf/agents/rendering.py `Renderer`), so a warm start trains exactly the tokens RL samples from.

    prompt       = Renderer.prompt(the messages before the first assistant turn, the row's tools)     never a target
    assistant    = the turn's text as the model writes it, tokenized, then the stop token (EOS)       targets
    tool / user  = Renderer.environment_tokens(stop token, the messages up to the next assistant turn) never targets
    ...          (the last assistant turn ends on its stop token, as an episode's last turn does)

A turn's text is the template's own rendering of the assistant message (between the generation prompt and the end of
the turn). A template that does not render tool calls (SmolLM2's, which shows the tools in a system prompt) gets
them in the format that prompt shows and `env.tool_format` parses (Hermes: `<tool_call>{"name": ..., "arguments":
{...}}</tool_call>`, each on a line of its own); either way the tool parser must read the calls back from the text,
or the row is refused, since RL could never reward a call it cannot read.

`mask[t]` is 1 when token t is a target (predicted from the tokens before it): with `assistant_only_loss` the
assistant turns' tokens and their stop tokens; with `completion_only_loss` (prompt + completion) the completion's.
Turned off, every token but the first is a target, as in TRL.
"""

import json
from dataclasses import dataclass

from rlhf.agents.rendering import PROBE, Renderer

HERMES_CALL = "<tool_call>{}</tool_call>"


class DemonstrationError(ValueError):
    """A row that cannot be a demonstration (its shape, or a turn the template or tool parser cannot carry)."""


@dataclass
class Conversation:
    """A demonstration split as an episode sees it."""
    prompt: list[dict]  # the messages before the first trained assistant turn (the episode's prompt)
    turns: list[dict]  # from the first assistant turn on: assistant, tool and user messages
    prompt_text: str | None  # the prompt as a plain string, when the row gave it so
    schemas: list[dict] | None  # the row's tools (a `tools` column), None: the run's (env.tools, env.factory)
    conversational: bool  # `messages` (assistant_only_loss) rather than prompt + completion (completion_only_loss)

    def target(self) -> str:
        """The last assistant turn's content: the reference an evaluation scores against (BLEU needs no column)."""
        return content_of(next(m for m in reversed(self.turns) if m["role"] == "assistant"))

    def eval_prompt(self, episodes: bool):
        """What an evaluation generates from: with episodes (tools, an environment) the prompt, and the episode plays
        every turn; otherwise the conversation up to its last assistant turn."""
        if episodes or len([m for m in self.turns if m["role"] == "assistant"]) == 1:
            return self.prompt_text if self.prompt_text is not None else self.prompt
        last = max(i for i, m in enumerate(self.turns) if m["role"] == "assistant")
        return [*self.prompt, *self.turns[:last]]


def clean(value):
    """A message (or tool schema) as the data gave it, less the None fields an Arrow table adds to every struct (a
    column's structs share one set of fields: a user message gets `tool_calls: None`)."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def content_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content blocks: their texts
        return "".join(block.get("text", "") for block in content if isinstance(block, dict))
    return content or ""


def conversation(row: dict) -> Conversation:
    """The row in one of TRL's SFT formats: `messages`; `prompt` + `completion` (strings or message lists); or `prompt`
    + `references` (BLEUBERI's SFT: the first reference is the completion). Raises DemonstrationError."""
    tools = row.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as err:
            raise DemonstrationError(f"tools is not JSON ({err}); give a list of tool schemas") from err
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise DemonstrationError(f"tools must be a list of JSON schemas of functions, got {tools!r:.80}")
    schemas = clean(tools) or None
    if row.get("messages") is not None:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m
                                                                     for m in messages):
            raise DemonstrationError(f"messages must be a non-empty list of messages with a role, got {messages!r:.80}")
        messages = clean(messages)
        first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
        if first is None:
            raise DemonstrationError("the conversation has no assistant turn: nothing to train on")
        prompt, turns, text, conversational = messages[:first], messages[first:], None, True
    else:
        prompt = row.get("prompt")
        completion = row.get("completion")
        if completion is None and row.get("references"):
            completion = row["references"][0] if isinstance(row["references"], list) else row["references"]
        if not (isinstance(prompt, str) and prompt.strip()) and not (isinstance(prompt, list) and prompt):
            raise DemonstrationError(f"prompt must be a non-empty string or message list, got {prompt!r:.80}")
        if completion is None:
            raise DemonstrationError("a row needs `messages`, or `prompt` with `completion` (or `references`, whose first "
                                     "is the completion)")
        if isinstance(completion, str):
            if not completion.strip():
                raise DemonstrationError("the completion is empty")
            turns = [{"role": "assistant", "content": completion}]
        elif isinstance(completion, list) and completion and all(isinstance(m, dict) and "role" in m
                                                                 for m in completion):
            turns = clean(completion)
        else:
            raise DemonstrationError(f"completion must be a string or a non-empty message list, got {completion!r:.80}")
        if turns[0]["role"] != "assistant":
            raise DemonstrationError(f"the completion begins with a {turns[0]['role']} turn, not the assistant's")
        text = prompt if isinstance(prompt, str) else None
        prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else clean(prompt)
        conversational = False
    if turns[-1]["role"] != "assistant":
        raise DemonstrationError(f"the conversation ends with a {turns[-1]['role']} turn, after its last assistant "
                                 "turn: nothing after it would be trained; end it with the assistant's turn")
    return Conversation(prompt, turns, text, schemas, conversational)


@dataclass
class Tokens:
    ids: list[int]
    mask: list[int]  # 1: a target
    prompt_length: int  # tokens of the episode's prompt


class DemonstrationRenderer:
    """Tokens of demonstrations under the run's template, tools and tool format (`renderer`: the episodes' own when
    the run has them)."""

    def __init__(self, renderer: Renderer, assistant_only_loss: bool, completion_only_loss: bool):
        self.renderer, self.tokenizer = renderer, renderer.tokenizer
        self.assistant_only, self.completion_only = assistant_only_loss, completion_only_loss
        self.stop = self.tokenizer.eos_token_id
        stop_text = self.tokenizer.decode([self.stop]) if self.stop is not None else None
        if not stop_text or not renderer.end_of_turn.startswith(stop_text):
            raise DemonstrationError(f"the chat template ends an assistant turn with {renderer.end_of_turn!r}, which does "
                                     f"not begin with the tokenizer's EOS token {stop_text!r}, on which generation "
                                     "stops: a demonstration's turns could not end as the model's do")
        self.head = renderer.render(PROBE, generation_prompt=True, schemas=[])

    def key(self) -> list:
        """What the tokens depend on (a cache's fingerprint)."""
        r = self.renderer
        return [getattr(self.tokenizer, "name_or_path", ""), len(self.tokenizer), r.chat_template or
                self.tokenizer.chat_template, r.kwargs, r.system_prompt, r.schemas, r.tool_format, r.template_tools,
                self.assistant_only, self.completion_only]

    def tokens(self, conv: Conversation) -> Tokens:
        r = self.renderer
        ids = r.prompt(conv.prompt, conv.schemas)
        prompt_length = len(ids)
        mask = [0] * len(ids)
        i = 0
        while i < len(conv.turns):
            if conv.turns[i]["role"] == "assistant":
                turn = r.encode(self.assistant_text(conv.turns[i])) + [self.stop]
                ids, mask, i = ids + turn, mask + [1] * len(turn), i + 1
                continue
            end = next(j for j in range(i, len(conv.turns)) if conv.turns[j]["role"] == "assistant")
            environment = r.environment_tokens(self.stop, conv.turns[i:end])
            ids, mask, i = ids + environment, mask + [0] * len(environment), end
        everything = not (self.assistant_only if conv.conversational else self.completion_only)
        if everything:
            mask = [1] * len(ids)
        mask[0] = 0  # nothing predicts the first token
        return Tokens(ids, mask, prompt_length)

    def assistant_text(self, message: dict) -> str:
        """The assistant turn as the model writes it after the generation prompt, without the end of the turn."""
        calls = [call_of(c) for c in message.get("tool_calls") or []]
        plain = {"role": "assistant", "content": content_of(message)}
        if calls:
            plain["tool_calls"] = [{"id": c.get("id", f"call_{k}"), "type": "function",
                                    "function": {"name": c["name"], "arguments": c["arguments"]}}
                                   for k, c in enumerate(calls)]
        text = self._template_text(plain)
        if calls and not all(c["name"] in text for c in calls):  # the template shows no calls: the tool prompt's format
            fmt = self.renderer.tool_format
            if fmt != "hermes":
                raise DemonstrationError(f"the chat template does not render an assistant turn's tool calls, and only "
                                         f"the Hermes format of the tools' system prompt is written by us "
                                         f"(env.tool_format={fmt}); give a template that renders tool calls")
            written = [HERMES_CALL.format(json.dumps({"name": c["name"], "arguments": c["arguments"]}))
                       for c in calls]
            content = content_of(message)
            text = (content + "\n" if content else "") + "\n".join(written)
        if calls:
            self._check_calls(text, calls)
        return text

    def _template_text(self, message: dict) -> str:
        r = self.renderer
        full = r.render([*PROBE, message], generation_prompt=False, schemas=[])
        if full.startswith(self.head) and full.endswith(r.end_of_turn):
            return full[len(self.head):len(full) - len(r.end_of_turn)]
        # a template that renders the last turn in its own way: the content as the probe showed it placed
        return content_of(message)

    def _check_calls(self, text: str, calls: list[dict]) -> None:
        _, parsed, malformed = self.renderer.parse(text)
        read = [(c.name, _json(c.arguments)) for c in parsed]
        wanted = [(c["name"], c["arguments"]) for c in calls]
        if malformed or read != wanted:
            raise DemonstrationError(f"the assistant turn's tool calls {wanted} are written {text!r:.200}, which "
                                     f"env.tool_format={self.renderer.tool_format} reads as {read}: RL could never "
                                     "reward them")


def call_of(call: dict) -> dict:
    """A tool call in TRL's (OpenAI's) shape, `{"function": {"name", "arguments"}}` or flat `{"name", "arguments"}`,
    with its arguments as an object (a JSON string is parsed)."""
    function = call.get("function", call)
    if not isinstance(function, dict) or "name" not in function:
        raise DemonstrationError(f"a tool call needs a function name, got {call!r:.80}")
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as err:
            raise DemonstrationError(f"the arguments of the call to {function['name']} are not JSON: {err}") from err
    return {**({"id": call["id"]} if "id" in call else {}), "name": function["name"], "arguments": arguments}


def _json(text: str):
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text

