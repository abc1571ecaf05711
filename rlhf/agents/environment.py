"""TRL's environment contract, taken unchanged (`GRPOTrainer(environment_factory=...)`, TRL 1.16): a class, one
instance per episode, with
- `reset(**row) -> str | None`: called with the data row's columns before the episode; a string is appended to
  the last user message (as TRL does);
- every other public method defined on the class: a tool (type hints and a Google-style docstring), bound to the
  instance, so the episode's calls change its state;
- optionally `get_reward()` (sync or async): called once when the episode ends, the objective `env` (put
  `{name: env}` in `reward.functions` to weigh it like any other).
One extension of ours, for environments that answer the model rather than being called: `respond(text) -> str |
None`, called with an assistant turn that called no tool; a string is the environment's reply (a user turn), None
ends the episode. Without `respond` a turn without a tool call ends the episode, as in TRL.
"""

import asyncio
import inspect

from rlhf.agents.tools import Tool, tool_from_function
from rlhf.imports import import_object

RESERVED = ("reset", "get_reward", "respond")


class EnvironmentClass:
    """The user's class, checked once: it can be built with no argument and has `reset`."""

    def __init__(self, path: str):
        self.path, self.cls = path, import_object(path)
        if not inspect.isclass(self.cls):
            raise ValueError(f"env.factory={path!r} is not a class")
        if not callable(getattr(self.cls, "reset", None)):
            raise ValueError(f"env.factory={path!r}: an environment class must define reset(**row) -> str | None")
        self.tool_names = [name for name, _ in inspect.getmembers(self.cls, predicate=inspect.isfunction)
                           if not name.startswith("_") and name not in RESERVED]
        self.has_reward = callable(getattr(self.cls, "get_reward", None))
        self.responds = callable(getattr(self.cls, "respond", None))
        probe = self.cls()  # every tool must describe itself to the model: checked before any episode
        self.schemas = [tool_from_function(getattr(probe, name)).schema for name in self.tool_names]

    def new(self) -> "Environment":
        return Environment(self.cls(), self.tool_names)


class Environment:
    def __init__(self, instance, tool_names: list[str]):
        self.instance = instance
        self.tools = {tool.name: tool for tool in (tool_from_function(getattr(instance, n)) for n in tool_names)}

    def reset(self, row: dict) -> str | None:
        observation = self.instance.reset(**row)
        if observation is not None and not isinstance(observation, str):
            raise ValueError(f"{type(self.instance).__name__}.reset returned {type(observation).__name__}, not a "
                             "string or None")
        return observation

    def respond(self, text: str) -> str | None:
        return self.instance.respond(text) if hasattr(self.instance, "respond") else None

    def reward(self) -> float | None:
        if not hasattr(self.instance, "get_reward"):
            return None
        value = self.instance.get_reward()
        return asyncio.run(value) if inspect.isawaitable(value) else value


def tools_of(paths: list[str]) -> dict[str, Tool]:
    """`env.tools`: functions named by import path, by their tool name."""
    tools = {}
    for path in paths:
        tool = tool_from_function(import_object(path))
        if tool.name in tools:
            raise ValueError(f"env.tools: two tools are named {tool.name!r}")
        tools[tool.name] = tool
    return tools
