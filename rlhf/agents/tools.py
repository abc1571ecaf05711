"""Tools an episode's model may call, in TRL's shape: a plain Python function (sync or async) with type hints and a
Google-style docstring, its JSON schema from transformers (`get_json_schema`). `ToolRunner` calls a turn's tools off
the engine's thread under a timeout, and turns every failure (an exception, a timeout, an unknown tool, bad
arguments) into a message the model reads, never a crash; a long answer is cut to `max_response_tokens`.
"""

import ast
import asyncio
import concurrent.futures
import inspect
import json
import math
import operator
from dataclasses import dataclass
from typing import Callable


@dataclass
class Tool:
    name: str
    fn: Callable
    schema: dict  # {"type": "function", "function": {name, description, parameters}}


def tool_from_function(fn: Callable) -> Tool:
    from transformers.utils import get_json_schema

    try:
        schema = get_json_schema(fn)
    except Exception as err:  # transformers raises its own kinds for missing hints or docstrings
        raise ValueError(f"tool {getattr(fn, '__qualname__', fn)!r} cannot be described to the model: {err} (a tool "
                         "needs type hints on every argument and a Google-style docstring with an Args section)") from err
    return Tool(schema["function"]["name"], fn, schema)


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass
class ToolResult:
    name: str
    content: str
    error: bool  # the call failed (the content says how), counted in rollout/tool_errors


class ToolRunner:
    """Runs tool calls in worker threads, each bounded by `timeout_s` (a call that hangs keeps its thread, and the
    episode goes on with an error message)."""

    def __init__(self, timeout_s: float, max_response_tokens: int, tokenizer, workers: int = 8):
        self.timeout_s, self.max_response_tokens, self.tokenizer = timeout_s, max_response_tokens, tokenizer
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tool")

    def run(self, calls: list[tuple[dict[str, Tool], ToolCall]]) -> list[ToolResult]:
        """Every call of a turn (over all episodes) side by side: (the episode's tools by name, the call)."""
        started = [(call, self._start(tools, call)) for tools, call in calls]
        return [self._finish(call, future) for call, future in started]

    def _start(self, tools: dict[str, Tool], call: ToolCall):
        tool = tools.get(call.name)
        if tool is None:
            return f"no tool is named {call.name!r}; the tools are {sorted(tools)}"
        try:
            arguments = json.loads(call.arguments) if call.arguments else {}
        except json.JSONDecodeError as err:
            return f"the arguments of {call.name} are not JSON: {err}"
        if not isinstance(arguments, dict):
            return f"the arguments of {call.name} must be a JSON object, not {type(arguments).__name__}"
        return self.pool.submit(_call, tool.fn, arguments)

    def _finish(self, call: ToolCall, future) -> ToolResult:
        if isinstance(future, str):
            return ToolResult(call.name, f"error: {future}", error=True)
        try:
            result = future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            return ToolResult(call.name, f"error: {call.name} did not answer within {self.timeout_s:g} s", error=True)
        except Exception as err:  # noqa: BLE001 - whatever the tool raised, the model is told
            return ToolResult(call.name, f"error: {type(err).__name__}: {err}", error=True)
        return ToolResult(call.name, self._cut(result if isinstance(result, str) else json.dumps(result, default=str)),
                          error=False)

    def _cut(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_response_tokens:
            return text
        return self.tokenizer.decode(ids[: self.max_response_tokens]) + f" ... [cut at {self.max_response_tokens} tokens]"

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _call(fn: Callable, arguments: dict):
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(**arguments))
    return fn(**arguments)


# ---- built-in tools ----

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses.

    Args:
        expression: The expression to evaluate, for example "(3 + 4) * 12".
    """
    value = _evaluate(ast.parse(expression.strip(), mode="eval").body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value)


def _evaluate(node):
    """Walks the parsed expression itself: nothing but numbers and arithmetic is ever evaluated (no eval)."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponents above 64 are refused")
        result = _OPERATORS[type(node.op)](left, right)
        if isinstance(result, float) and not math.isfinite(result):
            raise ValueError("the result is not a finite number")
        return result
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    raise ValueError(f"only numbers and + - * / // % ** are allowed, not {ast.dump(node)[:60]}")
