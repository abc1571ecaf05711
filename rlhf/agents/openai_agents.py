"""Agents written against the OpenAI client, trained unchanged: a rollout source (`env.agent=pkg.module:run`).

`run(client, row) -> float | dict | None` gets an `openai.AsyncOpenAI` whose base_url is the run's endpoint and whose
key names its episode (a sync `run` gets an `openai.OpenAI` and runs in a thread), and the data row under its own
column names. It drives any agent loop it likes (a hand loop, the Agents SDK, LangGraph, smolagents) and returns the
episode's reward: a number, a dict of them (each read by `{name: env, kwargs: {key: ...}}`), or None to leave
scoring to `reward.functions`, which get the conversation as TRL's multi-turn `completions`.

Token in, token out: a call's messages are rendered with the chat template (and its tools) only where they start
the episode; a call whose messages extend the conversation as served (its messages, then the reply it got) appends
just the new messages' tokens, as the template writes them after the model's turn (Renderer.environment_tokens), mask
0; the sampled tokens are the engine's own, never re-tokenized, with their logprobs. A call that rewrote its history
(a summary, a dropped turn) starts a new segment (counted in `rollout/agent_segments`), rendered afresh. Tool calls are
read by vLLM's tool parsers, as in episodes.

`/v1/completions` (legacy text completions) is served alike, with no template: a text prompt that starts with the
text served so far (the segment's last prompt and its reply) appends just its new text's tokens (mask 0), token ids
that start with the segment's tokens so far append the rest; anything else opens a new segment (text tokenized as
vLLM's completions do, ids as given). The stop token a turn ended on stays in the context (the reply's text omits it,
as OpenAI's does). A `stop` string ends the reply's text before it, and its tokens before the one where it begins:
the later tokens were sampled but are neither returned nor trained. Reward functions see each reply as an assistant
message and the agent's text between replies as a user message. A chat call after a text one, or a text one after a
chat one, opens a segment (token ids may extend either).

Every segment trains, each as a sequence of its own, with the episode's reward. The episode stays one sample (one
row of the batch): its later segments follow the first in its completion, each opened by its own prompt as
environment tokens (mask 0), and `segment_ids` marks which token is whose; the learner scores each segment on its
own tokens only, positions from 0 (`Experience.segments`, rlhf/training/segments.py). So the reward is the
episode's, scored once, and every estimator sees one row per episode: group statistics (GRPO, RLOO, ...) are over
the G episodes of a row, however many segments each has, and every segment's tokens carry their episode's
advantage; token-level estimators (GAE, REINFORCE++) credit the episode's reward at its last model token and carry
it back over the earlier segments as over turns. `env.max_episode_tokens` counts every segment's tokens, later
prompts included. Reward functions see the last segment's conversation (`prompt`, `completions`) and the whole
row's `completion_ids`.

A step's episodes advance together: once every live agent waits on a call (or finished), their calls go to the
engines as one batched generate call, so a step costs about as many generate calls as its longest episode has turns.
In rollout.mode=async each call goes to the engine's request stream as soon as its agent makes it (`AgentGroup`).
Limits: `env.max_turns` calls, `env.max_episode_tokens`, `env.agent_timeout_s` per episode; a call past a limit is
refused (400), an agent that raises or hangs is one failed episode (unscorable, its traceback in the driver's log),
and a step where most episodes fail stops the run naming the agent.
"""

import asyncio
import concurrent.futures
import inspect
import json
import logging
import math
import random
import secrets
import threading
import traceback
from dataclasses import dataclass, field, replace

from rlhf.agents.episodes import Episode, source_columns
from rlhf.agents.openai_api import (
    ChatCall,
    RequestError,
    TextCall,
    assistant_message,
    chat_response,
    comparable,
    completion_response,
    stop_cut,
)
from rlhf.agents.rendering import Renderer
from rlhf.agents.tools import event_loop
from rlhf.imports import import_object

log = logging.getLogger(__name__)


class AgentFailure(ValueError):
    """Most of a step's episodes failed: the agent, not the policy, is at fault."""


@dataclass
class Pending:
    prompt_ids: list[int]  # what the engine continues: the episode's tokens so far
    max_new_tokens: int
    future: asyncio.Future  # on the endpoint's loop
    call: ChatCall
    taken: bool = False  # sent to the engines


@dataclass
class AgentEpisode(Episode):
    """An `Episode` whose completion may hold several segments: the first continues `prompt_ids`, each later one
    (a history the agent rewrote) opens with its own prompt as environment tokens (mask 0). `segment_ids` gives each
    completion token its segment; the learner scores each segment as a sequence of its own (`Experience.segments`)."""

    failed: str | None = None  # why the agent's episode failed (it raised, hung or broke a limit)
    segments: int = 0  # conversations the agent started afresh (1: it only ever extended its first)
    segment_ids: list[int] = field(default_factory=list)  # per completion token: its segment, from 0
    segment_start: int = 0  # where the current segment's tokens begin in completion_ids (its prompt's first)

    def add(self, tokens: list[int], logprobs: list[float] | None, versions: list[int] | None = None) -> None:
        super().add(tokens, logprobs, versions)
        self.segment_ids += [max(self.segments - 1, 0)] * len(tokens)

    def context(self) -> list[int]:
        """The current segment's tokens so far: what the engine continues."""
        if self.segments <= 1:
            return self.prompt_ids + self.completion_ids
        return self.completion_ids[self.segment_start:]


@dataclass
class Session:
    """One episode of a black-box agent: its key, its row, its tokens so far."""

    key: str
    index: int
    row: dict
    episode: AgentEpisode = field(default_factory=lambda: AgentEpisode([], [], "", False))
    history: list | None = None  # the conversation as served: the last call's messages and the reply, comparable
    text: str | None = None  # the text as served by /v1/completions: the last prompt and its reply
    tools: list | None = None
    stop: int | None = None  # the last turn's stop token (None: cut short)
    pending: Pending | None = None
    done: bool = False
    result: object = None
    play: "concurrent.futures.Future | None" = None  # the agent's episode on the process's event loop


class AgentRunner:
    """The rollout source of `env.agent`; its endpoint starts with the first rollout and ends with `close`."""

    def __init__(self, actors, cfg, tokenizer):
        from rlhf.data.prompts import read_chat_template

        self.actors, self.cfg, self.env, self.tokenizer = actors, cfg, cfg.env, tokenizer
        self.agent = import_object(cfg.env.agent)
        if not callable(self.agent):
            raise ValueError(f"env.agent={cfg.env.agent!r} is not a function (client, row) -> reward")
        self.renderer = Renderer(tokenizer, [], cfg.env.tool_format, cfg.env.tools_prompt, None,
                                 read_chat_template(cfg.data.chat_template, tokenizer),
                                 dict(cfg.data.chat_template_kwargs or {}))
        self.columns = {k: v for k, v in cfg.data.columns.items() if v is not None}
        self.cond = threading.Condition()
        self.sessions: dict[str, Session] = {}
        self.endpoint = None
        self.warned = set()

    def bind(self, actors) -> None:
        self.actors = actors

    def prompt_overhead(self) -> int:
        return 0  # the agent writes its own prompts

    # ---- the endpoint's side (its loop's thread)

    async def serve(self, key: str, call: ChatCall | TextCall) -> dict:
        with self.cond:
            session = self.sessions.get(key)
        if session is None or session.done:
            raise RequestError("no live episode has this key (each episode gets its own, as its client's api_key)",
                               status=401)
        for name in call.ignored:
            self._warn_once(name, f"the agent's {name} is ignored: the run samples at rollout.{name}, which the "
                                  "learner scores at")
        if session.episode.turns >= self.env.max_turns:
            raise RequestError(f"this episode made its env.max_turns={self.env.max_turns} calls")
        chat = isinstance(call, ChatCall)
        future = asyncio.get_running_loop().create_future()
        pending = self._prepare(session, call, future) if chat else self._prepare_text(session, call, future)
        with self.cond:
            session.pending = pending
            self.cond.notify_all()
        sample = await pending.future
        return self._respond(session, pending, sample) if chat else self._respond_text(session, pending, sample)

    def _prepare(self, session: Session, call: ChatCall, future) -> Pending:
        episode = session.episode
        history = [comparable(m) for m in call.messages]
        extends = (session.history is not None and call.tools == session.tools
                   and history[:len(session.history)] == session.history)
        if extends:
            new = call.messages[len(session.history):]
            self._extend(episode, self.renderer.environment_tokens(session.stop, new) if new else [])
            episode.messages += new
        else:  # the first call, or a history the agent rewrote: a segment of its own
            self._open_segment(episode, self.renderer.prompt(call.messages, call.tools or []))
            episode.prompt, episode.messages = call.messages, []
        return self._pending(episode, call.max_tokens, future, call)

    def _extend(self, episode: AgentEpisode, tokens: list[int]) -> None:
        """The environment's tokens between the model's turns of a segment (mask 0)."""
        if len(episode.completion_ids) + len(tokens) >= self.env.max_episode_tokens:
            raise RequestError(f"this episode's tokens would pass env.max_episode_tokens={self.env.max_episode_tokens}")
        episode.add(tokens, None)

    def _open_segment(self, episode: AgentEpisode, ids: list[int]) -> None:
        """The episode's first prompt, or a later segment's: its prompt tokens open it as environment tokens (mask 0)
        after the earlier segments, every segment's tokens counting against env.max_episode_tokens."""
        if len(ids) > self.cfg.data.max_prompt_tokens:
            raise RequestError(f"the prompt has {len(ids)} tokens, more than data.max_prompt_tokens="
                               f"{self.cfg.data.max_prompt_tokens}")
        if episode.segments == 0:
            episode.prompt_ids = ids
        else:
            if len(episode.completion_ids) + len(ids) >= self.env.max_episode_tokens:
                raise RequestError(f"this episode's tokens with a new segment's prompt of {len(ids)} tokens would pass "
                                   f"env.max_episode_tokens={self.env.max_episode_tokens}")
            episode.segment_start = len(episode.completion_ids)
        episode.segments += 1
        if episode.segments > 1:
            episode.add(ids, None)

    def _prepare_text(self, session: Session, call: TextCall, future) -> Pending:
        """A /v1/completions call: a text prompt that starts with the text served so far (the last prompt and its
        reply) extends the segment by its new text's tokens (mask 0); token ids that start with the segment's tokens
        so far extend it by the rest. Anything else opens a segment: the text tokenized as vLLM's completions do
        (with the tokenizer's special tokens), or the ids as given."""
        episode, prompt = session.episode, call.prompt
        if isinstance(prompt, list):
            if max(prompt) >= len(self.tokenizer):
                raise RequestError(f"prompt holds token id {max(prompt)}, past the vocabulary of {len(self.tokenizer)}",
                                   "prompt")
            so_far = episode.context() if episode.segments else None
            if so_far is not None and prompt[:len(so_far)] == so_far:
                new, tokens = None, prompt[len(so_far):]
                self._extend(episode, tokens)
            else:
                self._open_segment(episode, list(prompt))
                new, episode.prompt, episode.messages = None, self.tokenizer.decode(prompt), []
        elif session.text is not None and prompt.startswith(session.text):
            new = prompt[len(session.text):]
            self._extend(episode, self.renderer.encode(new) if new else [])
        else:
            self._open_segment(episode, self.tokenizer(prompt)["input_ids"])
            new, episode.prompt, episode.messages = None, prompt, []
        if new:  # reward functions see the agent's text between the replies as the user's turns
            episode.messages.append({"role": "user", "content": new})
        return self._pending(episode, call.max_tokens, future, call)

    def _respond_text(self, session: Session, pending: Pending, sample) -> dict:
        episode, call = session.episode, pending.call
        ids, logprobs, versions, truncated = sample.completion_ids, sample.logprobs, sample.versions, sample.truncated
        decode = lambda tokens: self.tokenizer.decode(tokens, skip_special_tokens=True)
        kept = stop_cut(ids, decode, call.stop) if call.stop else None
        if kept is not None:  # the tokens from the one where the stop string begins are dropped
            ids, logprobs, truncated = ids[:kept], logprobs[:kept], False
            versions = versions[:kept] if versions is not None else None
        episode.add(ids, logprobs, versions)
        episode.turns += 1
        text = decode(ids)
        episode.messages.append(assistant_message(text, []))
        session.text = call.prompt + text if isinstance(call.prompt, str) else None
        session.history, session.stop = None, None  # a chat call after this one starts a segment of its own
        tokens = [self.tokenizer.decode([i]) for i in ids] if call.logprobs else None
        return completion_response(text, "length" if truncated else "stop", len(pending.prompt_ids), len(ids),
                                   logprobs if call.logprobs else None, tokens, "policy")

    def _pending(self, episode: AgentEpisode, max_tokens: int | None, future, call) -> Pending:
        room = self.env.max_episode_tokens - len(episode.completion_ids)
        budget = min(max_tokens or self.cfg.rollout.max_new_tokens, self.cfg.rollout.max_new_tokens, room)
        return Pending(episode.context(), budget, future, call)

    def _respond(self, session: Session, pending: Pending, sample) -> dict:
        episode, ids = session.episode, sample.completion_ids
        episode.add(ids, sample.logprobs, sample.versions)
        episode.turns += 1
        session.stop = None if sample.truncated or not ids else ids[-1]
        content, calls, _ = self.renderer.parse(self.renderer.raw_text(ids, stopped=session.stop is not None))
        if not calls:
            content = sample.text
        for call in calls:
            call.id = f"call_{session.index}_{episode.tool_calls}"
            episode.tool_calls += 1
        message = assistant_message(content, calls)
        episode.messages.append(message)
        session.history = [comparable(m) for m in pending.call.messages] + [comparable(message)]
        session.tools, session.text = pending.call.tools, None  # a text prompt after this one starts a segment
        finish = "tool_calls" if calls else ("length" if sample.truncated else "stop")
        tokens = [self.tokenizer.decode([i]) for i in ids] if pending.call.logprobs else None
        return chat_response(message, finish, len(pending.prompt_ids), sample.logprobs if tokens else None, tokens,
                             "policy", len(ids))

    # ---- the driver's side

    def rollout(self, batch, group_size: int, sampling, version: int, timer) -> list[list[AgentEpisode]]:
        """G episodes of the agent for each row of `batch`, played to their end."""
        from rlhf.rollout.generation import generate
        sessions = self._start(batch, group_size)
        try:
            for round_ in range(self.env.max_turns + 1):
                with self.cond:  # every live agent waits on a call, or has finished (a hang ends at its timeout)
                    self.cond.wait_for(lambda: all(s.done or (s.pending and not s.pending.taken) for s in sessions))
                    ready = [s for s in sessions if not s.done and s.pending and not s.pending.taken]
                    for s in ready:
                        s.pending.taken = True
                if not ready:
                    break
                seed = None if sampling.seed is None else random.Random(f"{sampling.seed}/agent/{round_}").getrandbits(48)
                for budget in sorted({s.pending.max_new_tokens for s in ready}):
                    same = [s for s in ready if s.pending.max_new_tokens == budget]
                    with timer("generate"):
                        outputs = generate(self.actors, [s.pending.prompt_ids for s in same], 1,
                                           replace(sampling, max_new_tokens=budget, seed=seed), version)
                    for s, [sample] in zip(same, outputs):
                        self.endpoint.loop.call_soon_threadsafe(s.pending.future.set_result, sample)
            with self.cond:
                self.cond.wait_for(lambda: all(s.done for s in sessions), timeout=self.env.agent_timeout_s)
        finally:
            episodes = self._close(sessions)
        return [episodes[g * group_size:(g + 1) * group_size] for g in range(len(batch.rows))]

    def _close(self, sessions: list[Session]) -> list[AgentEpisode]:
        """The sessions' episodes, their keys no longer taken."""
        with self.cond:
            for s in sessions:
                self.sessions.pop(s.key, None)
        return [self._finish(s) for s in sessions]

    def _start(self, batch, group_size: int) -> list[Session]:
        if self.endpoint is None:
            from rlhf.agents.openai_server import Endpoint

            self.endpoint = Endpoint(self.serve, self.env.agent_host)
        sessions = []
        for row in batch.rows:
            for _ in range(group_size):
                session = Session(secrets.token_hex(16), len(sessions), source_columns(row, self.columns))
                session.episode.prompt = row["prompt"]
                sessions.append(session)
        with self.cond:  # each play set before `close` can see the session
            self.sessions.update((s.key, s) for s in sessions)
            for session in sessions:
                session.play = asyncio.run_coroutine_threadsafe(self._play(session), event_loop())
        return sessions

    async def _play(self, session: Session) -> None:
        import openai

        episode = session.episode
        try:
            if inspect.iscoroutinefunction(self.agent):
                async with openai.AsyncOpenAI(base_url=self.endpoint.base_url, api_key=session.key, max_retries=0,
                                              timeout=self.env.agent_timeout_s) as client:
                    result = await asyncio.wait_for(self.agent(client, session.row), self.env.agent_timeout_s)
            else:
                with openai.OpenAI(base_url=self.endpoint.base_url, api_key=session.key, max_retries=0,
                                   timeout=self.env.agent_timeout_s) as client:
                    result = await asyncio.wait_for(asyncio.to_thread(self.agent, client, session.row),
                                                    self.env.agent_timeout_s)
            session.result = checked_result(result, self.cfg.env.agent)
        except Exception as err:  # noqa: BLE001 - the agent's: one failed episode, its traceback in the log
            if isinstance(err, asyncio.TimeoutError):
                episode.failed = f"timed out after env.agent_timeout_s={self.env.agent_timeout_s:g} s"
            else:
                episode.failed = f"raised {type(err).__name__}: {err}"
            log.warning("env.agent %s: an episode failed: %s\n%s", self.cfg.env.agent, episode.failed,
                        "".join(traceback.format_exception(err)))
        finally:
            with self.cond:
                session.done = True
                self.cond.notify_all()

    def _finish(self, session: Session) -> AgentEpisode:
        episode = session.episode
        episode.done = True
        episode.text = next((m.get("content") or "" for m in reversed(episode.messages)
                             if m.get("role") == "assistant"), "")
        episode.env_reward = None if episode.failed else session.result
        return episode

    def group(self, batch, group_size: int, sampling) -> "AgentGroup":
        return AgentGroup(self, batch, group_size, sampling)

    def metrics(self, groups: list[list[AgentEpisode]]) -> dict[str, float]:
        episodes = [e for g in groups for e in g]
        failed = [e.failed for e in episodes if e.failed]
        if len(failed) * 2 > len(episodes):
            raise AgentFailure(f"env.agent={self.cfg.env.agent!r}: {len(failed)} of {len(episodes)} episodes of the "
                               f"step failed (e.g. it {failed[0]}); tracebacks in <output_dir>/logs/driver.log")
        if any(isinstance(e.env_reward, (int, float)) for e in episodes) and not self._reads_agent_reward():
            self._warn_once("unread", "the agent returns rewards, but no objective reads them: list {name: env} in "
                                      "reward.functions")
        count = max(len(episodes), 1)
        return {"rollout/turns": sum(e.turns for e in episodes) / count,
                "rollout/tool_calls": sum(e.tool_calls for e in episodes) / count,
                "rollout/agent_segments": sum(e.segments for e in episodes) / count,
                "rollout/agent_failures": len(failed),
                "rollout/env_tokens": sum(len(e.model_mask) - e.model_tokens for e in episodes) / count}

    def _reads_agent_reward(self) -> bool:
        return any(f.name == "env" for f in self.cfg.reward.functions)

    def _warn_once(self, what: str, message: str) -> None:
        if what not in self.warned:
            self.warned.add(what)
            log.warning("%s", message)

    def close(self) -> None:
        """Cancels the episodes still playing (their agents would otherwise live on in the process's event loop until
        their timeout), then stops the endpoint."""
        with self.cond:
            live, self.sessions = list(self.sessions.values()), {}
        for session in live:
            session.play.cancel()
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None


class AgentGroup:
    """One row's G agent episodes streamed (rollout.mode=async): each episode's next call goes to the engine as soon
    as its agent makes it. `start` and `receive` wait (in the async producer's threads) until the agent has made its
    next call or finished."""

    def __init__(self, runner: "AgentRunner", batch, size: int, sampling):
        self.runner, self.sampling = runner, sampling
        self.sessions = runner._start(batch, size)
        self.episodes = None

    def start(self) -> list[tuple]:
        return [request for j in range(len(self.sessions)) for request in self._next(j)]

    def receive(self, j: int, sample) -> list[tuple]:
        session = self.sessions[j]
        self.runner.endpoint.loop.call_soon_threadsafe(session.pending.future.set_result, sample)
        return self._next(j)

    def _next(self, j: int) -> list[tuple]:
        """Session j's next call as a request, or none once its agent finished."""
        session, cond = self.sessions[j], self.runner.cond
        with cond:
            cond.wait_for(lambda: session.done or (session.pending and not session.pending.taken))
            if session.done:
                return []
            session.pending.taken = True
        seed = self.sampling.seed
        if seed is not None:  # a call's seed of its own
            seed = random.Random(f"{seed}/agent/{session.episode.turns}").getrandbits(48) + j
        return [(j, session.pending.prompt_ids,
                 replace(self.sampling, max_new_tokens=session.pending.max_new_tokens, seed=seed))]

    def result(self) -> list[AgentEpisode] | None:
        if self.episodes is None and all(s.done for s in self.sessions):
            self.episodes = self.runner._close(self.sessions)
        return self.episodes


def checked_result(result, agent: str):
    """The agent's return: a finite number, a dict of them, or None."""
    if result is None or isinstance(result, dict):
        return result
    try:
        value = float(result)
    except (TypeError, ValueError):
        raise ValueError(f"env.agent={agent!r} returned {type(result).__name__}, not a number, a dict of numbers or "
                         "None") from None
    if math.isinf(value):
        raise ValueError(f"env.agent={agent!r} returned {value}: rewards must be finite")
    return value
