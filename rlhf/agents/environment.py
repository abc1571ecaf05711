"""TRL's environment contract, taken unchanged (`GRPOTrainer(environment_factory=...)`, TRL 1.16).

`env.factory` is an import path of any callable that returns an instance (a class, a function, a
`functools.partial`), called with no argument once per episode; or a dict of them (TRL's multi-environment mode:
each row's `environment` column picks one, and only that one's tools are shown in the row's prompt). An instance has
- `reset(**row) -> str | None`: called with the data row's columns under their own names before the episode (not
  the `environment` column); a string is appended to the last user message, as TRL does;
- every other public method of its class: a tool (type hints and a Google-style docstring), bound to the
  instance, so the episode's calls change its state;
- optionally `get_reward()` (sync or async): called once when the episode ends, a reward of weight 1 logged under
  the class's name, as TRL adds it to `reward_funcs` (`{name: env}` in `reward.functions` sets its weight).
Two extensions of ours, both opt-in so no method of a TRL user's class changes meaning:
- `env.reply: <method>` names a method `(text) -> str | None` called with an assistant turn that called no tool: a
  string is the environment's reply (a user turn), None ends the episode. That method is then no tool. Without it a
  turn without a tool call ends the episode, as in TRL.
- `step_reward() -> float | None`, when the class defines it, is read after each of the model's turns (after the
  turn's tools ran): a reward for that turn (see docs/algorithms.md, per-turn rewards).
A misbehaving class (cannot be built, a tool that cannot be described, a raising `reset`) stops the run with one
line naming the class and the method; a raising `get_reward` leaves that episode unscorable (counted).
"""

import inspect

from rlhf.agents.tools import Tool, run_coroutine, tool_from_function
from rlhf.imports import import_object

RESERVED = ("reset", "get_reward", "step_reward")


class EnvironmentFailure(ValueError):
    """The user's environment misbehaved: one line naming its class and method."""


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class EnvironmentSpec:
    """One factory, checked once on a probe instance: it builds with no argument, has `reset`, its tools describe
    themselves. `name`: its key in a dict of factories (None for a single one)."""

    def __init__(self, name: str | None, path: str, reply: str | None):
        self.name, self.path, self.reply = name, path, reply
        self.factory = import_object(path)
        if not callable(self.factory):
            raise ValueError(f"env.factory={path!r} is {type(self.factory).__name__}, not a callable that returns an "
                             "environment")
        probe = self.build()
        self.cls = type(probe)
        self.class_name = self.cls.__name__
        if not callable(getattr(probe, "reset", None)):
            raise EnvironmentFailure(f"env.factory={path!r}: {self.class_name} has no reset(**row) method; an "
                                     "environment must define one")
        if reply and not callable(getattr(probe, reply, None)):
            raise EnvironmentFailure(f"env.reply={reply!r}: {self.class_name} has no method of that name")
        # listed on the class, as TRL does (getmembers on the instance would evaluate properties)
        self.tool_names = [n for n, _ in inspect.getmembers(self.cls, predicate=inspect.isfunction)
                           if not n.startswith("_") and n not in RESERVED and n != reply]
        self.schemas = []
        for n in self.tool_names:
            try:
                self.schemas.append(tool_from_function(getattr(probe, n)).schema)
            except ValueError as err:
                raise EnvironmentFailure(f"env.factory={path!r}: the tool {self.class_name}.{n}: {err}; every public "
                                         "method but reset and get_reward is a tool (a method that answers the "
                                         f"model's text in turns without a tool call is the reply: env.reply={n})"
                                         ) from err
        self.has_reward = callable(getattr(probe, "get_reward", None))
        self.probe = probe  # the first episode's instance: TRL builds once and resets often, so do we

    def build(self):
        try:
            return self.factory()
        except Exception as err:  # noqa: BLE001 - the user's constructor: named, in one line
            raise EnvironmentFailure(f"env.factory={self.path!r}: calling it with no argument (once per episode, as "
                                     f"TRL's environment_factory) raised {_describe(err)}") from err

    def new(self) -> "Environment":
        instance, self.probe = (self.probe, None) if self.probe is not None else (self.build(), None)
        return Environment(instance, self)


class Environment:
    """One episode's instance with its tools bound to it."""

    def __init__(self, instance, spec: EnvironmentSpec):
        self.instance, self.spec = instance, spec
        self.tools = {tool.name: tool for tool in (tool_from_function(getattr(instance, n)) for n in spec.tool_names)}
        self.has_step_reward = callable(getattr(instance, "step_reward", None))

    def _name(self, method: str) -> str:
        return f"{self.spec.class_name}.{method}"

    def reset(self, row: dict) -> str | None:
        try:
            observation = self.instance.reset(**row)
        except Exception as err:  # noqa: BLE001
            raise EnvironmentFailure(f"{self._name('reset')} raised {_describe(err)} (it is called with the row's "
                                     f"columns {sorted(row)})") from err
        if observation is not None and not isinstance(observation, str):
            raise EnvironmentFailure(f"{self._name('reset')} returned {type(observation).__name__}, not a string or "
                                     "None")
        return observation

    def respond(self, text: str) -> str | None:
        """The reply hook's answer (env.reply), None without one."""
        if not self.spec.reply:
            return None
        try:
            reply = getattr(self.instance, self.spec.reply)(text)
        except Exception as err:  # noqa: BLE001
            raise EnvironmentFailure(f"{self._name(self.spec.reply)} raised {_describe(err)}") from err
        if reply is not None and not isinstance(reply, str):
            raise EnvironmentFailure(f"{self._name(self.spec.reply)} returned {type(reply).__name__}, not a string "
                                     "or None")
        return reply

    def reward(self) -> tuple[float | None, str | None]:
        """(get_reward()'s value, None), or (None, why) when it raised or returned no number: that episode is then
        unscorable, as a reward function's None."""
        return self._read("get_reward") if self.spec.has_reward else (None, None)

    def step_reward(self) -> tuple[float | None, str | None]:
        return self._read("step_reward") if self.has_step_reward else (None, None)

    def _read(self, method: str) -> tuple[float | None, str | None]:
        try:
            value = getattr(self.instance, method)()
            if inspect.isawaitable(value):
                value = run_coroutine(value)
            return (None if value is None else float(value)), None
        except Exception as err:  # noqa: BLE001 - counted, and the run goes on
            return None, f"{self._name(method)} raised {_describe(err)}"


class Environments:
    """`env.factory`: one factory, or TRL's dict of them (name -> import path) routed by the rows' `environment`."""

    def __init__(self, factory, reply: str | None):
        if isinstance(factory, str):
            self.multi, self.specs = False, {None: EnvironmentSpec(None, factory, reply)}
        elif isinstance(factory, dict) and factory:
            self.multi = True
            self.specs = {str(name): EnvironmentSpec(str(name), path, reply) for name, path in factory.items()}
        else:
            raise ValueError(f"env.factory must be an import path or a dict of them (name -> path), not {factory!r}")
        rewarded = list(dict.fromkeys(s.class_name for s in self.specs.values() if s.has_reward))
        self.has_reward = bool(rewarded)
        # TRL logs an environment's reward under its class name; several classes share one objective here
        self.reward_label = rewarded[0] if len(rewarded) == 1 else "env"

    def spec_for(self, row: dict) -> EnvironmentSpec:
        if not self.multi:
            return self.specs[None]
        name = row.get("environment")
        if name not in self.specs:
            raise EnvironmentFailure(f"a row's environment={name!r} is not among env.factory's {sorted(self.specs)} "
                                     "(in multi-environment mode every row names its environment in the "
                                     "`environment` column)")
        return self.specs[name]

    def reset_arguments(self, row: dict) -> dict:
        """What `reset` gets: the row's columns, less the routing column in multi-environment mode (as TRL)."""
        return {k: v for k, v in row.items() if not (self.multi and k == "environment")}


_probed: dict[tuple[str, str | None], Environments] = {}


def environments(factory, reply: str | None) -> Environments:
    """`env.factory` checked on probe instances, once per process: the config's loading asks whether the environment
    owns a reward, the episode runner then takes the same probes as its first instances (TRL builds once)."""
    key = (repr(sorted(factory.items())) if isinstance(factory, dict) else repr(factory), reply)
    if key not in _probed:
        _probed[key] = Environments(factory, reply)
    return _probed[key]


def environment_reward_label(env) -> str | None:
    """The label of the reward TRL adds by itself for an environment that defines get_reward (weight 1, logged
    under its class name), None when it has none. `env`: the config's `env` section."""
    if not isinstance(env.factory, (str, dict)) or not env.factory:
        return None
    found = environments(env.factory, env.reply)
    return found.reward_label if found.has_reward else None


def tools_of(paths: list[str]) -> dict[str, Tool]:
    """`env.tools`: functions named by import path, by their tool name."""
    tools = {}
    for path in paths:
        tool = tool_from_function(import_object(path))
        if tool.name in tools:
            raise ValueError(f"env.tools: two tools are named {tool.name!r}")
        tools[tool.name] = tool
    return tools
