"""Multi-turn episodes as a rollout source: the model's turns and the environment's answers, token in, token out.

A step's episodes (G per prompt row) advance together: each turn is one batched call to the engines with every
unfinished episode's tokens so far (vLLM's prefix cache reuses their shared contexts), so a step costs at most
`env.max_turns` generate calls. After a turn each episode's tool calls run side by side (`ToolRunner`, off the
engines, under `env.tool_timeout_s`); their results, or the environment's reply (`respond`), are appended as
tokens (`Renderer.environment_tokens`). An episode ends when the model answers without a tool call (and the
environment does not reply), when its turns run out, or when its tokens would pass `env.max_episode_tokens`
(truncated); a turn that reaches `rollout.max_new_tokens` (one turn's budget) is closed by the environment and the
episode goes on. A GRPO group is G episodes of one row from the same initial state: Python's `random` is seeded per group
before each `reset`, so a self-sampling environment gives the group one task.
"""

import json
import random
from dataclasses import dataclass, field, replace

from rlhf.agents import sandbox
from rlhf.agents.environment import EnvironmentClass, tools_of
from rlhf.agents.rendering import Renderer
from rlhf.agents.tools import ToolResult, ToolRunner
from rlhf.engines.base import Sample

PYTHON_TOOL = "rlhf.agents.sandbox:python"


@dataclass
class Episode(Sample):
    """A sample whose completion interleaves model and environment tokens. `completion_ids` and `logprobs` hold
    every token after the prompt (the environment's with logprob 0); `model_mask` is 1 on the model's tokens, the
    only ones trained on; `text` is the last assistant turn's content (what single-turn reward functions read)."""

    prompt_ids: list[int] = field(default_factory=list)
    prompt: object = None  # the prompt as reward functions see it: the row's, with reset's observation appended
    model_mask: list[int] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  # TRL's completions shape: assistant and tool/user turns
    env_reward: float | None = None  # get_reward(), when the environment has one
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0  # failed or malformed calls, and calls over env.max_tool_calls
    done: bool = False

    def add(self, tokens: list[int], logprobs: list[float] | None, versions: list[int] | None = None) -> None:
        """The model's tokens (with their logprobs, and in async runs the weights versions that sampled them), or the
        environment's (logprobs None; they take the version of the model's turn before them)."""
        self.completion_ids += tokens
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(tokens)
        self.model_mask += [1 if logprobs is not None else 0] * len(tokens)
        if versions is not None:
            self.versions = (self.versions or []) + versions
        elif self.versions:
            self.versions += [self.versions[-1]] * len(tokens)


class EpisodeRunner:
    def __init__(self, actors, cfg, tokenizer):
        from rlhf.data.prompts import read_chat_template

        env = cfg.env
        self.actors, self.env, self.tokenizer = actors, env, tokenizer
        self.env_class = EnvironmentClass(env.factory) if env.factory else None
        self.tools = tools_of(env.tools)
        if PYTHON_TOOL in env.tools:
            check_sandbox(env.allow_unsandboxed_python)
            sandbox.configure(sandbox.Limits(env.python_cpu_s, env.tool_timeout_s, env.python_memory_mb,
                                             env.python_output_bytes, sandboxed=not env.allow_unsandboxed_python))
        schemas = [t.schema for t in self.tools.values()] + (self.env_class.schemas if self.env_class else [])
        self.renderer = Renderer(tokenizer, schemas, env.tool_format, env.tools_prompt, cfg.data.system_prompt,
                                 read_chat_template(cfg.data.chat_template), dict(cfg.data.chat_template_kwargs or {}))
        self.runner = ToolRunner(env.tool_timeout_s, env.max_tool_response_tokens, tokenizer)
        self.max_prompt_tokens = cfg.data.max_prompt_tokens  # what the engines' context was sized for

    def rollout(self, batch, group_size: int, sampling, version: int, timer) -> list[list[Episode]]:
        """G episodes for each row of `batch`, played to their end; seeds follow `sampling.seed`."""
        from rlhf.sampling import generate

        episodes, envs = self._start(batch, group_size, sampling.seed)
        for turn in range(self.env.max_turns):
            active = [i for i, e in enumerate(episodes) if not e.done]
            if not active:
                break
            turn_seed = random.Random(f"{sampling.seed}/turn/{turn}").getrandbits(48) if sampling.seed is not None \
                else None
            with timer("generate"):
                outputs = generate(self.actors, [episodes[i].prompt_ids + episodes[i].completion_ids for i in active],
                                   1, replace(sampling, seed=turn_seed), version)
            pending = []  # what the environment answers this turn, see _answer
            for i, [sample] in zip(active, outputs):
                answer = self._after_turn(episodes[i], envs[i], sample, last=turn == self.env.max_turns - 1)
                if answer is not None:
                    pending.append((i, *answer))
            with timer("tools"):
                self._answer(episodes, envs, pending)
        for episode, env in zip(episodes, envs):
            self._finish(episode, env)
        return [episodes[g * group_size:(g + 1) * group_size] for g in range(len(batch.rows))]

    def group(self, batch, group_size: int, sampling) -> "EpisodeGroup":
        return EpisodeGroup(self, batch, group_size, sampling)

    def _after_turn(self, episode: Episode, env, sample: Sample, last: bool) -> tuple | None:
        """Add the model's turn; what the environment must answer to it, `(stop token, kind, payload)` (see _answer),
        or None when the episode ends here."""
        stop = self._add_turn(episode, sample)
        content, calls, malformed = self.renderer.parse(sample.text)
        episode.messages.append(assistant_message(content, calls, sample.text))
        if episode.done or last:  # out of budget, or of turns: nothing is answered
            episode.done = True
        elif malformed:
            return stop, "error", [ToolResult("tool_call", MALFORMED, error=True)]
        elif calls:
            return stop, "tools", calls
        else:
            reply = env.respond(content) if env is not None else None
            if reply is not None:
                return stop, "reply", reply
            episode.done = True
        return None

    @staticmethod
    def _finish(episode: Episode, env) -> None:
        episode.text = next((m["content"] for m in reversed(episode.messages) if m["role"] == "assistant"), "")
        episode.env_reward = env.reward() if env is not None else None

    def _start(self, batch, group_size: int, seed) -> tuple[list[Episode], list]:
        episodes, envs = [], []
        for g, row in enumerate(batch.rows):
            for _ in range(group_size):
                env = self.env_class.new() if self.env_class else None
                messages = prompt_messages(row["prompt"])
                if env is not None:
                    random.seed(f"{seed}/{g}")  # the same task for every episode of the group
                    observation = env.reset(row)
                    if observation:
                        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + observation}
                prompt = messages if isinstance(row["prompt"], list) else messages[-1]["content"]
                prompt_ids = self.renderer.prompt(messages)
                if len(prompt_ids) > self.max_prompt_tokens:
                    raise ValueError(f"an episode's prompt has {len(prompt_ids)} tokens (the tools' descriptions and "
                                     "the environment's observation count), more than data.max_prompt_tokens="
                                     f"{self.max_prompt_tokens}: raise it")
                episodes.append(Episode([], [], "", False, prompt_ids=prompt_ids, prompt=prompt))
                envs.append(env)
        return episodes, envs

    def _add_turn(self, episode: Episode, sample: Sample) -> int | None:
        """Append the model's tokens, cut to the episode's budget (which then ends it, truncated); returns the turn's
        stop token, None for a turn that `rollout.max_new_tokens` cut short (the environment closes it)."""
        room = self.env.max_episode_tokens - len(episode.completion_ids)
        tokens, logprobs = sample.completion_ids[:room], sample.logprobs[:room]
        episode.add(tokens, logprobs, sample.versions[:room] if sample.versions is not None else None)
        episode.turns += 1
        if len(sample.completion_ids) >= room:
            episode.done = episode.truncated = True
        return None if sample.truncated or not tokens else tokens[-1]

    def _answer(self, episodes: list[Episode], envs: list, pending: list) -> None:
        """Run the turn's tool calls (every episode's side by side) and append each answer as tokens. `pending`:
        (episode, its turn's stop token, "tools" with its calls | "error" with its answers | "reply" with a text)."""
        calls = []  # (episode, (its tools, a call)) for the calls within each episode's env.max_tool_calls
        for i, _, kind, payload in pending:
            if kind == "tools":
                allowed = max(self.env.max_tool_calls - episodes[i].tool_calls, 0)
                tools = {**self.tools, **(envs[i].tools if envs[i] is not None else {})}
                calls += [(i, (tools, call)) for call in payload[:allowed]]
        results = {i: [] for i, *_ in pending}
        for (i, _), result in zip(calls, self.runner.run([call for _, call in calls])):
            results[i].append(result)
        for i, stop, kind, payload in pending:
            episode = episodes[i]
            if kind == "reply":
                messages = [{"role": "user", "content": payload}]
            else:
                answers = payload if kind == "error" else results[i]
                if kind == "tools":
                    episode.tool_calls += len(payload)
                    if len(answers) < len(payload):
                        answers = answers + [ToolResult("tool_call", OVER_LIMIT.format(self.env.max_tool_calls), True)]
                episode.tool_errors += sum(answer.error for answer in answers)
                messages = [{"role": "tool", "name": a.name, "content": a.content} for a in answers]
            tokens = self.renderer.environment_tokens(stop, messages)
            if len(episode.completion_ids) + len(tokens) >= self.env.max_episode_tokens:
                episode.done = episode.truncated = True  # no room for the answer and another turn
                continue
            episode.add(tokens, None)
            episode.messages += messages

    def metrics(self, groups: list[list[Episode]]) -> dict[str, float]:
        return episode_metrics(groups)

    def close(self) -> None:
        self.runner.close()


class EpisodeGroup:
    """One row's G episodes streamed (rollout.mode=async): each episode asks for its next turn as soon as its last one
    is answered, so a long episode holds back no other. The turns are the runner's (`_after_turn`, `_answer`)."""

    def __init__(self, runner: EpisodeRunner, batch, size: int, sampling):
        self.runner, self.sampling = runner, sampling
        self.episodes, self.envs = runner._start(batch, size, sampling.seed)
        self.turns = [0] * size

    def start(self) -> list[tuple]:
        return [self._request(j) for j in range(len(self.episodes))]

    def _request(self, j: int) -> tuple:
        episode, seed = self.episodes[j], self.sampling.seed
        if seed is not None:  # a turn's seed of its own, as in the synchronous runner
            seed = random.Random(f"{seed}/turn/{self.turns[j]}").getrandbits(48) + j
        return j, episode.prompt_ids + episode.completion_ids, replace(self.sampling, seed=seed)

    def receive(self, j: int, sample: Sample) -> list[tuple]:
        """The episode's turn came back: the environment answers it (tools run here); its next turn, if any."""
        episode, env = self.episodes[j], self.envs[j]
        self.turns[j] += 1
        answer = self.runner._after_turn(episode, env, sample, last=self.turns[j] == self.runner.env.max_turns)
        if answer is not None:
            self.runner._answer([episode], [env], [(0, *answer)])
        if episode.done:
            self.runner._finish(episode, env)
            return []
        return [self._request(j)]

    def result(self) -> list[Episode] | None:
        return self.episodes if all(e.done for e in self.episodes) else None


MALFORMED = ("error: the tool call could not be read; write it as <tool_call>{\"name\": \"<tool name>\", "
             "\"arguments\": {...}}</tool_call> with the arguments as a JSON object")
OVER_LIMIT = "error: this episode may make at most {} tool calls; answer without one"


def prompt_messages(prompt) -> list[dict]:
    return [dict(m) for m in prompt] if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def assistant_message(content: str, calls: list, text: str) -> dict:
    """An assistant turn in TRL's completions shape (tool calls with their arguments as objects)."""
    message = {"role": "assistant", "content": content if calls else text}
    if calls:
        def arguments(call):
            try:
                return json.loads(call.arguments)
            except json.JSONDecodeError:
                return call.arguments

        message["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": arguments(c)}}
                                 for c in calls]
    return message


def check_sandbox(allow_unsandboxed: bool) -> None:
    if sandbox.available():
        return
    if not allow_unsandboxed:
        raise ValueError(f"env.tools names {PYTHON_TOOL}, which runs model-written code, but the sandbox (bubblewrap: "
                         "apt-get install bubblewrap, and user namespaces or root) cannot run here; install it, or set "
                         "env.allow_unsandboxed_python=true to run that code with resource limits only")


def episode_metrics(groups: list[list[Episode]]) -> dict[str, float]:
    """Per-episode means of a step's turns, tool calls, tool errors and environment tokens."""
    episodes = [e for g in groups for e in g]
    count = max(len(episodes), 1)
    return {"rollout/turns": sum(e.turns for e in episodes) / count,
            "rollout/tool_calls": sum(e.tool_calls for e in episodes) / count,
            "rollout/tool_errors": sum(e.tool_errors for e in episodes) / count,
            "rollout/env_tokens": sum(len(e.model_mask) - sum(e.model_mask) for e in episodes) / count}
