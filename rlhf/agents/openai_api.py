"""The OpenAI chat-completions and (legacy) completions contracts as the endpoint serves them (pure: request checks,
responses, errors).

`/v1/chat/completions` takes: `model` (any name), `messages`, `tools`, `tool_choice` (`auto` / `none`; a forced call
is refused), `n` = 1, `max_tokens` / `max_completion_tokens`, `temperature` / `top_p` (the run samples at
rollout.temperature and top_p, the ones the learner scores at: other values are ignored, with a warning once), `stop`
(refused: a sampled token is never cut), `logprobs` / `top_logprobs` = 0, `stream` (one chunk with the whole turn,
then [DONE]), `stream_options`, `seed`, `user`, `parallel_tool_calls`, `metadata`, `store`.

`/v1/completions` takes: `model`, `prompt` (a string or a list of token ids; a list of one of them too, never more),
`max_tokens` (unset: rollout.max_new_tokens, not OpenAI's 16), `temperature` / `top_p` (ignored as above), `stop` (a
string or up to 4: the text ends before the first, and so do the turn's tokens: those from the one where the stop
string begins are dropped, never given to the agent nor trained), `logprobs` = 0 (OpenAI's legacy shape: `tokens`,
`token_logprobs`, `text_offset`; no alternatives), `n` = 1, `best_of` = 1, `echo` = false, `stream`, `stream_options`,
`seed`, `user`.

Anything else, on either, is refused with OpenAI's error shape naming the field.
"""

import json
import time
import uuid
from dataclasses import dataclass, field

TAKEN = {"model", "messages", "tools", "tool_choice", "n", "max_tokens", "max_completion_tokens", "temperature",
         "top_p", "stop", "logprobs", "top_logprobs", "stream", "stream_options", "seed", "user",
         "parallel_tool_calls", "metadata", "store"}


class RequestError(ValueError):
    """A request the endpoint does not serve: HTTP 400 in OpenAI's error shape, naming the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


@dataclass
class ChatCall:
    messages: list[dict]
    tools: list[dict]
    max_tokens: int | None
    logprobs: bool
    stream: bool
    include_usage: bool = False
    ignored: list[str] = field(default_factory=list)  # sampling fields the run overrides (warned once)


def check_fields(body: dict, taken: set[str]) -> None:
    """A JSON object whose every field the endpoint serves: the first other one is named."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = sorted(set(body) - taken)
    if unknown:
        raise RequestError(f"{unknown[0]!r} is not supported by this endpoint (it serves {sorted(taken)})", unknown[0])


def parse_chat_request(body: dict) -> ChatCall:
    check_fields(body, TAKEN)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise RequestError("messages must be a non-empty list of messages with a role", "messages")
    if body.get("n", 1) != 1:
        raise RequestError("n must be 1: each call is one turn of its episode", "n")
    if body.get("stop") not in (None, [], ""):
        raise RequestError("stop is not supported: every sampled token is trained on, none is cut", "stop")
    if body.get("tool_choice") not in (None, "auto", "none"):
        raise RequestError("tool_choice must be auto or none (a forced call would not be the policy's sample)",
                           "tool_choice")
    if body.get("top_logprobs") not in (None, 0):
        raise RequestError("top_logprobs must be 0: the sampled token's logprob is returned", "top_logprobs")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise RequestError("max_tokens must be a positive integer", "max_tokens")
    tools = body.get("tools") or []
    if body.get("tool_choice") == "none":
        tools = []
    for tool in tools:
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict)
                and tool["function"].get("name")):
            raise RequestError("each tool must be {\"type\": \"function\", \"function\": {\"name\": ...}}", "tools")
    return ChatCall(messages=[dict(m) for m in messages], tools=tools, max_tokens=max_tokens,
                    logprobs=bool(body.get("logprobs")), stream=bool(body.get("stream")),
                    include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
                    ignored=[k for k in ("temperature", "top_p") if body.get(k) is not None])


COMPLETION_TAKEN = {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "logprobs", "n", "best_of",
                    "echo", "stream", "stream_options", "seed", "user"}
MAX_STOPS = 4  # as OpenAI


@dataclass
class TextCall:
    """A /v1/completions call: its prompt as text (compared with the text served so far) or as token ids (compared
    with the episode's tokens so far)."""

    prompt: str | list[int]
    max_tokens: int | None
    logprobs: bool
    stop: list[str]
    stream: bool
    include_usage: bool = False
    ignored: list[str] = field(default_factory=list)


def parse_completion_request(body: dict) -> TextCall:
    check_fields(body, COMPLETION_TAKEN)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
            raise RequestError("prompt must be a string or one list of token ids (each call is one turn of its "
                               "episode: a batch of prompts is not served)", "prompt")
    elif not isinstance(prompt, str) or not prompt:
        raise RequestError("prompt must be a non-empty string or a list of token ids", "prompt")
    if body.get("n", 1) not in (1, None):
        raise RequestError("n must be 1: each call is one turn of its episode", "n")
    if body.get("best_of") not in (None, 1):
        raise RequestError("best_of must be 1: each call is one turn of its episode", "best_of")
    if body.get("echo"):
        raise RequestError("echo is not supported: the prompt is the agent's own, it is not scored", "echo")
    logprobs = body.get("logprobs")
    if logprobs not in (None, 0) or isinstance(logprobs, bool):
        raise RequestError("logprobs must be 0: the sampled token's logprob is returned, no alternatives", "logprobs")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else list(stop or [])
    stop = [s for s in stop if s != ""] if all(isinstance(s, str) for s in stop) else None
    if stop is None or len(stop) > MAX_STOPS:
        raise RequestError(f"stop must be a string or a list of at most {MAX_STOPS} strings", "stop")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise RequestError("max_tokens must be a positive integer", "max_tokens")
    return TextCall(prompt=prompt, max_tokens=max_tokens, logprobs=logprobs is not None, stop=stop,
                    stream=bool(body.get("stream")),
                    include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
                    ignored=[k for k in ("temperature", "top_p") if body.get(k) is not None])


def stop_cut(ids: list[int], decode, stops: list[str]) -> int | None:
    """How many of a turn's tokens to keep before the first stop string in its text: those whose text lies wholly
    before it (None: no stop string in the text). `decode(ids) -> str`."""
    text = decode(ids)
    found = [text.find(stop) for stop in stops if stop in text]
    if not found:
        return None
    at, kept = min(found), 0
    for k in range(1, len(ids) + 1):
        if len(decode(ids[:k])) > at:
            break
        kept = k
    return kept


def completion_response(text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int,
                        logprobs: list[float] | None, tokens: list[str] | None, model: str) -> dict:
    """A /v1/completions response (openai.types.Completion); `logprobs` in the legacy shape when asked for."""
    choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    if logprobs is not None:
        offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
        choice["logprobs"] = {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": None,
                              "text_offset": offsets}
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def completion_stream_chunks(response: dict, include_usage: bool) -> list[str]:
    """A completion as server-sent events (chunks have the response's own shape): the whole text in one chunk, the
    finish reason, the usage when asked, [DONE]."""
    base = {k: response[k] for k in ("id", "object", "created", "model")}
    choice = response["choices"][0]
    events = [base | {"choices": [{"index": 0, "text": choice["text"], "logprobs": choice["logprobs"],
                                   "finish_reason": None}]},
              base | {"choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": choice["finish_reason"]}]}]
    if include_usage:
        events.append(base | {"choices": [], "usage": response["usage"]})
    return [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]


def comparable(message: dict) -> tuple:
    """A message as the conversation's history compares it: what the template renders of it (a client's own extra
    keys, None against "", arguments as text or as an object, all count as the same)."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        calls.append((call.get("id"), function.get("name"), json.dumps(arguments, sort_keys=True)))
    return message.get("role"), content or "", tuple(calls), message.get("tool_call_id")


def assistant_message(content: str, calls) -> dict:
    """The turn as the response's message (and as the conversation's history holds it): OpenAI's shape, the
    arguments as JSON text."""
    message = {"role": "assistant", "content": content if content or not calls else None}
    if calls:
        message["tool_calls"] = [{"id": c.id, "type": "function", "function": {"name": c.name,
                                                                              "arguments": c.arguments}}
                                 for c in calls]
    return message


def chat_response(message: dict, finish_reason: str, prompt_tokens: int, logprobs: list[float] | None,
                  tokens: list[str] | None, model: str, completion_tokens: int | None = None) -> dict:
    choice = {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                                          for t, lp in zip(tokens, logprobs)]}
    if completion_tokens is None:
        completion_tokens = len(tokens or logprobs or [])
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [choice],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def stream_chunks(response: dict, include_usage: bool) -> list[str]:
    """The response as server-sent events: the whole turn in one delta (it is sampled before it is sent), the
    finish reason, [DONE]."""
    base = {k: response[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    choice = response["choices"][0]
    message = choice["message"]
    delta = {"role": "assistant", "content": message["content"]}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    events = [base | {"choices": [{"index": 0, "delta": delta, "logprobs": choice["logprobs"], "finish_reason": None}]},
              base | {"choices": [{"index": 0, "delta": {}, "logprobs": None,
                                   "finish_reason": choice["finish_reason"]}]}]
    if include_usage:
        events.append(base | {"choices": [], "usage": response["usage"]})
    return [f"data: {json.dumps(event)}\n\n" for event in events] + ["data: [DONE]\n\n"]
