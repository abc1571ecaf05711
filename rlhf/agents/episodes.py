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
import logging
import random
from dataclasses import dataclass, field, replace

from rlhf.agents import sandbox
from rlhf.agents.environment import environments, tools_of
from rlhf.agents.rendering import Renderer
from rlhf.agents.tools import ToolCall, ToolResult, ToolRunner, error_content
from rlhf.engines.base import Sample

log = logging.getLogger(__name__)
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
    env_reward_error: str | None = None  # why get_reward() gave no reward (it raised)
    # step_reward() after each turn: (index in completion_ids of the turn's last model token, reward)
    turn_rewards: list[tuple[int, float]] = field(default_factory=list)
    environment: object = field(default=None, repr=False)  # the episode's environment instance (reward functions')
    turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0  # failed or malformed calls, and calls over env.max_tool_calls / env.max_parallel_calls
    tool_timeouts: int = 0
    tool_responses_cut: int = 0
    other_format: str | None = None  # a turn carried another tool format's tag and no call was read
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

    @property
    def model_tokens(self) -> int:
        return sum(self.model_mask)


class EpisodeRunner:
    """Built before any actor (it checks the environment, the tools and the template: a class that cannot serve is
    named before Ray starts); `bind(actors)` gives it the engines."""

    def __init__(self, actors, cfg, tokenizer):
        from rlhf.data.prompts import read_chat_template

        env = cfg.env
        self.actors, self.env, self.tokenizer = actors, env, tokenizer
        self.environments = environments(env.factory, env.reply) if env.factory else None
        self.tools = tools_of(env.tools)
        if PYTHON_TOOL in env.tools:
            check_sandbox(env.allow_unsandboxed_python)
            sandbox.configure(sandbox.Limits(env.python_cpu_s, env.tool_timeout_s, env.python_memory_mb,
                                             env.python_output_bytes, sandboxed=not env.allow_unsandboxed_python))
        standalone = [t.schema for t in self.tools.values()]
        specs = self.environments.specs.values() if self.environments else []
        self.schemas = {spec.name: standalone + spec.schemas for spec in specs} or {None: standalone}
        every = standalone + [s for spec in specs for s in spec.schemas]
        self.renderer = Renderer(tokenizer, every, env.tool_format, env.tools_prompt, cfg.data.system_prompt,
                                 read_chat_template(cfg.data.chat_template, tokenizer),
                                 dict(cfg.data.chat_template_kwargs or {}))
        self.runner = ToolRunner(env.tool_timeout_s, env.max_tool_response_tokens, tokenizer, env.tool_workers,
                                 env.tool_response_truncate)
        self.max_prompt_tokens = cfg.data.max_prompt_tokens  # what the engines' context was sized for
        self.columns = {k: v for k, v in cfg.data.columns.items() if v is not None}  # canonical -> the data's name
        self.warned_format = False

    def bind(self, actors) -> None:
        self.actors = actors

    def prompt_overhead(self) -> int:
        """Tokens an episode's prompt holds beyond the row's own templated prompt: the tools' descriptions (the
        longest list, in multi-environment mode). The data stream counts them against data.max_prompt_tokens, so a
        row too long for an episode follows data.bad_rows (an observation that makes a prompt too long is named when
        the episode starts)."""
        probe = [{"role": "user", "content": "probe"}]
        bare = self.renderer.prompt(probe, schemas=[])
        longest = max(len(self.renderer.prompt(probe, schemas)) for schemas in self.schemas.values())
        return longest - len(bare)

    def rollout(self, batch, group_size: int, sampling, version: int, timer) -> list[list[Episode]]:
        """G episodes for each row of `batch`, played to their end; seeds follow `sampling.seed`."""
        from rlhf.rollout.generation import generate

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
            for i in active:
                self._turn_reward(episodes[i], envs[i])
        for episode, env in zip(episodes, envs):
            self._finish(episode, env)
        self._warn_other_format(episodes)
        return [episodes[g * group_size:(g + 1) * group_size] for g in range(len(batch.rows))]

    def group(self, batch, group_size: int, sampling) -> "EpisodeGroup":
        return EpisodeGroup(self, batch, group_size, sampling)

    def _after_turn(self, episode: Episode, env, sample: Sample, last: bool) -> tuple | None:
        """Add the model's turn; what the environment must answer to it, `(stop token, kind, payload)` (see _answer),
        or None when the episode ends here. The reply hook sees every finished turn, the last one too (its state
        may decide the reward); tools called in the last turn are not run, as in TRL."""
        kept, stop = self._add_turn(episode, sample)
        raw = self.renderer.raw_text(sample.completion_ids[:kept], stopped=stop is not None)
        content, calls, malformed = self.renderer.parse(raw)
        if not calls and not malformed:
            content = sample.text if kept == len(sample.completion_ids) else self.tokenizer.decode(
                sample.completion_ids[:kept], skip_special_tokens=True)
            if episode.other_format is None:
                episode.other_format = self.renderer.other_format(raw)
        for k, call in enumerate(calls):
            call.id = f"call_{episode.tool_calls + k}"
        episode.messages.append(assistant_message(content, calls))
        if not episode.done:  # within budget: the environment answers, unless this turn is the last
            if malformed and not last:
                return stop, "error", [ToolResult("tool_call", error_content(MALFORMED), error=True)]
            if calls and not last:
                return stop, "tools", calls
            reply = env.respond(content) if env is not None and not calls and not malformed else None
            if reply is not None and not last:
                return stop, "reply", reply
        # the episode ends with this turn: truncated if a budget cut it (the episode's, or the turn's own)
        episode.done = True
        episode.truncated = episode.truncated or sample.truncated
        return None

    def _finish(self, episode: Episode, env) -> None:
        episode.text = next((m["content"] for m in reversed(episode.messages) if m["role"] == "assistant"), "")
        if env is not None:
            episode.env_reward, episode.env_reward_error = env.reward()
            episode.environment = env.instance

    def _turn_reward(self, episode: Episode, env) -> None:
        """step_reward() after a turn (and its tools): credited at the turn's last model token."""
        if env is None or not env.has_step_reward:
            return
        value, error = env.step_reward()
        if error:
            log.warning("%s: the turn gets no reward", error)
        elif value:
            last = max(i for i, m in enumerate(episode.model_mask) if m)
            episode.turn_rewards.append((last, value))

    def _warn_other_format(self, episodes: list[Episode]) -> None:
        """Once per run: no turn of the step called a tool while the model writes another format's calls."""
        if self.warned_format or any(e.tool_calls for e in episodes):
            return
        other = next((e.other_format for e in episodes if e.other_format), None)
        if other:
            self.warned_format = True
            log.warning("no tool call was read in any turn of a step (env.tool_format=%s), but the model's text "
                        "carries the opening tag of the %r format: set env.tool_format to the model's", 
                        self.env.tool_format, other)

    def _start(self, batch, group_size: int, seed) -> tuple[list[Episode], list]:
        episodes, envs = [], []
        for g, row in enumerate(batch.rows):
            spec = self.environments.spec_for(row) if self.environments else None
            for _ in range(group_size):
                env = spec.new() if spec else None
                messages = prompt_messages(row["prompt"])
                if env is not None:
                    random.seed(f"{seed}/{g}")  # the same task for every episode of the group
                    observation = env.reset(self.environments.reset_arguments(source_columns(row, self.columns)))
                    if observation:
                        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + observation}
                prompt = messages if isinstance(row["prompt"], list) else messages[-1]["content"]
                prompt_ids = self.renderer.prompt(messages, self.schemas[spec.name if spec else None])
                if len(prompt_ids) > self.max_prompt_tokens:
                    raise ValueError(f"an episode's prompt has {len(prompt_ids)} tokens (the tools' descriptions and "
                                     "the environment's observation count), more than data.max_prompt_tokens="
                                     f"{self.max_prompt_tokens}: raise it")
                episodes.append(Episode([], [], "", False, prompt_ids=prompt_ids, prompt=prompt))
                envs.append(env)
        return episodes, envs

    def _add_turn(self, episode: Episode, sample: Sample) -> tuple[int, int | None]:
        """Append the model's tokens, cut to the episode's budget (a cut ends it, truncated; a turn that fills the
        budget exactly ends it too, truncated only if the turn itself was cut). Returns how many tokens were kept and
        the turn's stop token (None for a turn cut short: the environment closes it)."""
        room = self.env.max_episode_tokens - len(episode.completion_ids)
        tokens, logprobs = sample.completion_ids[:room], sample.logprobs[:room]
        episode.add(tokens, logprobs, sample.versions[:room] if sample.versions is not None else None)
        episode.turns += 1
        cut = len(sample.completion_ids) > room
        if len(sample.completion_ids) >= room:
            episode.done = True
            episode.truncated = cut
        return len(tokens), None if sample.truncated or cut or not tokens else tokens[-1]

    def _answer(self, episodes: list[Episode], envs: list, pending: list) -> None:
        """Run the turn's tool calls (each episode's in order, episodes side by side) and append each answer as
        tokens. `pending`: (episode, its turn's stop token, "tools" with its calls | "error" with its answers |
        "reply" with a text)."""
        runs, refusals = [], {}  # (episode, its calls that run), and why the rest do not
        for i, _, kind, payload in pending:
            if kind == "tools":
                allowed = max(self.env.max_tool_calls - episodes[i].tool_calls, 0)
                refusals[i] = OVER_EPISODE.format(self.env.max_tool_calls)
                if self.env.max_parallel_calls is not None and self.env.max_parallel_calls < allowed:
                    allowed, refusals[i] = self.env.max_parallel_calls, OVER_TURN.format(self.env.max_parallel_calls)
                tools = {**self.tools, **(envs[i].tools if envs[i] is not None else {})}
                runs.append((i, tools, payload[:allowed]))
        results = dict(zip((i for i, *_ in runs), self.runner.run([(tools, calls) for _, tools, calls in runs])))
        for i, stop, kind, payload in pending:
            episode = episodes[i]
            ends = False
            if kind == "reply":
                messages = [{"role": "user", "content": payload}]
            else:
                answers = payload if kind == "error" else results[i]
                if kind == "tools":
                    episode.tool_calls += len(payload)
                    ends = any(a.ends_episode for a in answers)
                    if not ends:
                        answers = answers + [ToolResult(c.name, error_content(refusals[i]), True, c.id)
                                             for c in payload[len(answers):]]
                episode.tool_errors += sum(a.error for a in answers)
                episode.tool_timeouts += sum(a.timed_out for a in answers)
                episode.tool_responses_cut += sum(a.cut for a in answers)
                messages = [tool_message(a) for a in answers]
            if ends:  # a tool ended the episode: its answer is in the messages, the model gets no further turn
                episode.messages += messages
                episode.done = True
                continue
            tokens = self.renderer.environment_tokens(stop, messages)
            if len(episode.completion_ids) + len(tokens) >= self.env.max_episode_tokens:
                episode.done = episode.truncated = True  # no room for the answer and another turn
                continue
            episode.add(tokens, None)
            episode.messages += messages

    def metrics(self, groups: list[list[Episode]]) -> dict[str, float]:
        errors = [e.env_reward_error for g in groups for e in g if e.env_reward_error]
        if errors:
            log.warning("%d episodes got no reward from their environment (unscorable), e.g. %s", len(errors),
                        errors[0])
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
        self.finished = [False] * size  # set last, once an episode's reward is read: episodes answer side by side

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
        self.runner._turn_reward(episode, env)
        if episode.done:
            self.runner._finish(episode, env)
            self.finished[j] = True
            return []
        return [self._request(j)]

    def result(self) -> list[Episode] | None:
        return self.episodes if all(self.finished) else None


MALFORMED = ("the tool call could not be read; write it as <tool_call>{\"name\": \"<tool name>\", \"arguments\": "
             "{...}}</tool_call> with the arguments as a JSON object")
OVER_EPISODE = "not run: an episode makes at most {} tool calls (env.max_tool_calls)"
OVER_TURN = "not run: a turn makes at most {} tool calls (env.max_parallel_calls)"


def prompt_messages(prompt) -> list[dict]:
    return [dict(m) for m in prompt] if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def assistant_message(content: str, calls: list[ToolCall]) -> dict:
    """An assistant turn in TRL's completions shape (tool calls with their arguments as objects, and their ids)."""
    message = {"role": "assistant", "content": content}
    if calls:
        def arguments(call):
            try:
                return json.loads(call.arguments)
            except json.JSONDecodeError:
                return call.arguments

        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": arguments(c)}} for c in calls]
    return message


def tool_message(result: ToolResult) -> dict:
    """A tool's answer as TRL's tool turn, with the id of the call it answers (templates that pair them read it)."""
    message = {"role": "tool", "name": result.name, "content": result.content}
    if result.call_id:
        message["tool_call_id"] = result.call_id
    return message


def source_columns(row: dict, columns: dict) -> dict:
    """The row under the data's own column names (what reset(**row) gets, as in TRL): each canonical column
    (`prompt`, `answer`, ...) back under the name data.columns mapped it from."""
    out = {k: v for k, v in row.items() if k not in columns}
    out.update({source: row[canonical] for canonical, source in columns.items() if canonical in row})
    return out


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
            "rollout/tool_timeouts": sum(e.tool_timeouts for e in episodes) / count,
            "rollout/tool_responses_cut": sum(e.tool_responses_cut for e in episodes) / count,
            "rollout/env_tokens": sum(len(e.model_mask) - e.model_tokens for e in episodes) / count,
            "rollout/env_reward_errors": sum(e.env_reward_error is not None for e in episodes),
            "rollout/turn_rewards": sum(r for e in episodes for _, r in e.turn_rewards) / count}
