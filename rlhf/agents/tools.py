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
import threading
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
    id: str = ""  # the call's id, which its tool message carries back (tool_call_id) for templates that use it


@dataclass
class ToolResult:
    name: str
    content: str | list  # a string, or a list of content blocks passed through as the tool returned it (TRL)
    error: bool  # the call failed (the content says how), counted in rollout/tool_errors
    call_id: str = ""
    timed_out: bool = False  # counted in rollout/tool_timeouts
    cut: bool = False  # the answer was cut to env.max_tool_response_tokens (rollout/tool_responses_cut)
    ends_episode: bool = False  # the tool raised EndEpisode


class EndEpisode(Exception):
    """Raised by a tool to end its episode (SkyRL's and OpenRLHF's `done`): the message is the call's answer, shown
    to reward functions in the episode's messages; the model gets no further turn."""


def error_content(message: str) -> str:
    """A failed call's answer, formatted as TRL formats one (`str({"error": ...})`)."""
    return str({"error": message})


class ToolRunner:
    """Runs tool calls: each episode's calls in the order the model wrote them (calls that change the environment's
    state must not race), episodes side by side. A sync call runs in a thread of its own among at most `workers`
    (env.tool_workers) at once; an async one on the process's event loop (one loop, as TRL runs them, so a client or
    lock an environment keeps across calls stays on its loop). Each call is bounded by `timeout_s` from the moment
    it starts; a sync call that never returns keeps its worker (counted against the pool, `hung`), and when every
    worker is held so, later calls fail at once instead of waiting. Every failure is an answer the model reads."""

    def __init__(self, timeout_s: float, max_response_tokens: int, tokenizer, workers: int, truncate: str):
        self.timeout_s, self.max_response_tokens, self.tokenizer = timeout_s, max_response_tokens, tokenizer
        self.workers, self.truncate = workers, truncate
        self.free = threading.Semaphore(workers)
        self.hung, self._lock = 0, threading.Lock()
        # one waiting thread per episode of a turn (they only wait: the tools run in the workers)
        self.episodes = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="tool-episode")

    def run(self, calls: list[tuple[dict[str, Tool], list[ToolCall]]]) -> list[list[ToolResult]]:
        """For each episode (its tools by name, its calls in order): its results, in order. A call after one that
        ended the episode is not run."""
        futures = [self.episodes.submit(self._in_order, tools, episode_calls) for tools, episode_calls in calls]
        return [future.result() for future in futures]

    def _in_order(self, tools: dict[str, Tool], calls: list[ToolCall]) -> list[ToolResult]:
        results = []
        for call in calls:
            if results and results[-1].ends_episode:
                break
            results.append(self.call(tools, call))
        return results

    def call(self, tools: dict[str, Tool], call: ToolCall) -> ToolResult:
        tool = tools.get(call.name)
        if tool is None:
            return self._failed(call, f"no tool is named {call.name!r}; the tools are {sorted(tools)}")
        try:
            arguments = json.loads(call.arguments) if call.arguments else {}
        except json.JSONDecodeError as err:
            return self._failed(call, f"the arguments of {call.name} are not JSON: {err}")
        if not isinstance(arguments, dict):
            return self._failed(call, f"the arguments of {call.name} must be a JSON object, not "
                                      f"{type(arguments).__name__}")
        try:
            if inspect.iscoroutinefunction(tool.fn):
                result = run_coroutine(tool.fn(**arguments), self.timeout_s)
            else:
                result = self._in_worker(tool.fn, arguments)
        except EndEpisode as end:
            return ToolResult(call.name, str(end), error=False, call_id=call.id, ends_episode=True)
        except (TimeoutError, concurrent.futures.TimeoutError):
            return self._failed(call, f"{call.name} did not answer within {self.timeout_s:g} s", timed_out=True)
        except NoWorker as err:
            return self._failed(call, str(err))
        except Exception as err:  # noqa: BLE001 - whatever the tool raised, the model is told
            return self._failed(call, f"{type(err).__name__}: {err}")
        if isinstance(result, list):  # content blocks (e.g. an image and a text), passed through as TRL does
            return ToolResult(call.name, result, error=False, call_id=call.id)
        content, cut = self._cut(str(result))
        return ToolResult(call.name, content, error=False, call_id=call.id, cut=cut)

    def _failed(self, call: ToolCall, message: str, timed_out: bool = False) -> ToolResult:
        return ToolResult(call.name, error_content(message), error=True, call_id=call.id, timed_out=timed_out)

    def _in_worker(self, fn: Callable, arguments: dict):
        """`fn(**arguments)` in a thread of its own once a worker is free, waited at most `timeout_s`."""
        while not self.free.acquire(timeout=0.2):
            with self._lock:
                if self.hung >= self.workers:
                    raise NoWorker(f"every one of the env.tool_workers={self.workers} tool workers is held by a call "
                                   "that never returned")
        box, done = {}, threading.Event()

        def work():
            try:
                box["value"] = fn(**arguments)
            except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = err
            finally:
                with self._lock:
                    done.set()
                    if box.get("abandoned"):
                        self.hung -= 1  # a hung call came back at last: its worker is free again
                self.free.release()

        threading.Thread(target=work, daemon=True, name="tool-call").start()
        if not done.wait(self.timeout_s):
            with self._lock:
                if not done.is_set():
                    box["abandoned"] = True
                    self.hung += 1
                    raise TimeoutError
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _cut(self, text: str) -> tuple[str, bool]:
        """The answer within `max_response_tokens`: its head, its tail (tracebacks end there) or both around a
        marker (env.tool_response_truncate)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        n = self.max_response_tokens
        if len(ids) <= n:
            return text, False
        marker = f" ... [{len(ids) - n} tokens cut] ... "
        decode = self.tokenizer.decode
        if self.truncate == "head":
            return decode(ids[:n]) + marker, True
        if self.truncate == "tail":
            return marker + decode(ids[-n:]), True
        return decode(ids[: n - n // 2]) + marker + decode(ids[len(ids) - n // 2:]), True

    def close(self) -> None:
        self.episodes.shutdown(wait=False, cancel_futures=True)


class NoWorker(RuntimeError):
    pass


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's one event loop for async tools and environment methods, on a daemon thread (as TRL's
    `start_event_loop_in_daemon`): an environment's client or lock, made on it, keeps working across calls."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, daemon=True, name="agents-event-loop").start()
        return _loop


def run_coroutine(coroutine, timeout_s: float | None = None):
    """Run a coroutine on the process's event loop from any thread; on a timeout it is cancelled."""
    future = asyncio.run_coroutine_threadsafe(coroutine, event_loop())
    try:
        return future.result(timeout_s)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise


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
