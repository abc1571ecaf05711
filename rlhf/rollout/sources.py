"""Rollout sources: what turns a batch of prompt rows into G samples each, behind one interface (`RolloutSource`).

`SingleTurn` (one completion per sample, below), `rlhf.agents.episodes.EpisodeRunner` (multi-turn episodes with tools
and environments) and `rlhf.agents.openai_agents.AgentRunner` (an agent's episodes through an OpenAI client) are the
three; the sampler, the schedules and the evaluator take whichever `rollout_source` gives them. A source serves both
the batch schedules (`rollout`: a whole batch at once) and the asynchronous one (`group`: one row's group as requests
streamed one by one, `GroupWork`). The agents' modules import `rlhf.rollout.generation` only, never this module."""

from dataclasses import replace
from typing import Protocol

from rlhf.config import Config
from rlhf.data import PromptBatch
from rlhf.engines.base import SamplingSettings
from rlhf.rollout import generation


class GroupWork(Protocol):
    """One prompt row's group as streamed requests; a request is `(key, prompt tokens, SamplingSettings)`."""

    def start(self) -> list[tuple]:
        """The first requests."""

    def receive(self, key, sample) -> list[tuple]:
        """Request `key` came back as `sample`: the next requests (an episode's next turn), maybe none."""

    def result(self) -> list | None:
        """The group's G samples once every one is done, else None."""


class RolloutSource(Protocol):
    def bind(self, actors) -> None:
        """The run's actors (the driver builds the source before Ray)."""

    def prompt_overhead(self) -> int:
        """Tokens a prompt holds beyond the row's templated prompt (counted against data.max_prompt_tokens)."""

    def rollout(self, batch: PromptBatch, group_size: int, sampling: SamplingSettings, version: int | None,
                timer) -> list[list]:
        """G samples for each row of `batch` on weights `version` or newer (seeds from `sampling.seed`)."""

    def group(self, batch: PromptBatch, group_size: int, sampling: SamplingSettings) -> GroupWork:
        """The one row of `batch` as a streamed group (rollout.mode=async)."""

    def metrics(self, groups) -> dict[str, float]:
        """The source's metrics over a batch's groups of samples."""

    def close(self) -> None:
        ...


class SingleTurn:
    """One completion per sample, shared among the engines."""

    def __init__(self, actors):
        self.actors = actors

    def bind(self, actors) -> None:
        self.actors = actors

    def prompt_overhead(self) -> int:
        return 0

    def rollout(self, batch: PromptBatch, group_size: int, sampling: SamplingSettings, version: int | None, timer):
        with timer("generate"):
            return generation.generate(self.actors, batch.token_ids, group_size, sampling, version)

    def group(self, batch: PromptBatch, group_size: int, sampling: SamplingSettings) -> "SingleTurnGroup":
        return SingleTurnGroup(batch.token_ids[0], group_size, sampling)

    def metrics(self, groups) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass


class SingleTurnGroup:
    """One prompt's G samples as G requests (sample j seeded `seed + j`, as vLLM seeds the j-th of n)."""

    def __init__(self, prompt_ids: list[int], size: int, sampling: SamplingSettings):
        self.prompt_ids, self.sampling, self.samples = prompt_ids, sampling, [None] * size

    def start(self) -> list[tuple]:
        seed = self.sampling.seed
        return [(j, self.prompt_ids, replace(self.sampling, seed=None if seed is None else seed + j))
                for j in range(len(self.samples))]

    def receive(self, key: int, sample) -> list[tuple]:
        self.samples[key] = sample
        return []

    def result(self) -> list | None:
        return self.samples if all(s is not None for s in self.samples) else None


def rollout_source(actors, cfg: Config, tokenizer):
    """Episodes when `env` names a factory or tools, an agent's episodes when it names `agent`, else single turns.
    `actors` may be None (`bind` them later): the driver builds the source before Ray, so an environment, tool or
    template that cannot serve is named at once."""
    if cfg.env.agent:
        from rlhf.agents.openai_agents import AgentRunner

        return AgentRunner(actors, cfg, tokenizer)
    if cfg.env.enabled:
        from rlhf.agents.episodes import EpisodeRunner

        return EpisodeRunner(actors, cfg, tokenizer)
    return SingleTurn(actors)
