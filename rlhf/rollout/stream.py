"""Requests streamed through one engine (rollout.mode=async), and the weights version of every token they sample.

The driver adds requests of one sample each (`submit`) and has the engine stepped for a slice of time (`advance`),
which hands back every request that finished during the slice; new requests join the running batch at any step.
Engines hand out only what each step added (vLLM's DELTA outputs): the stream appends it to the request's tokens
here, on the rollout actor, so a step costs the same at the thousandth token as at the first (a cumulative output
would copy each running request's whole history at every step). Before anything changes the engine's weights (a
push) or runs another generation on it (an evaluation), the rollout actor `hold`s the stream and `release`s it after:
- with partial rollouts, `hold` aborts the running requests and keeps what each has sampled; `release` adds each
  again as a continuation (its prompt followed by its tokens so far, the rest of its token budget), so it goes on
  with the new weights from where it stopped. The engine prefills the continuation anew (its KV cache was computed
  with the old weights). Every token keeps the version that sampled it.
- without, `hold` runs the running requests to their end on the old weights first (the push waits for them).
Requests submitted while the stream is held (a weight update spans several actor calls) wait with the held ones.
"""

import time
from collections import Counter
from dataclasses import dataclass, field, replace

from rlhf.engines.base import GenerationEngine, Sample, SamplingSettings

HOLD_CAUSES = ("push", "eval")  # why a hold interrupts requests: a weight update, or another generation


@dataclass
class Request:
    id: str  # the caller's; unique among the stream's requests
    prompt_ids: list[int]
    sampling: SamplingSettings  # its own seed and token budget; one sample


@dataclass
class _Progress:
    """A request's tokens so far (the engine hands out only each step's new ones)."""
    request: Request
    version: int  # of the weights sampling its current part
    ids: list[int] = field(default_factory=list)  # every part's tokens, appended step by step
    logprobs: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # of the tokens before the current part
    text: list[str] = field(default_factory=list)  # the current part's text pieces
    truncated: bool = False
    parts: int = 1

    def add(self, delta: Sample) -> None:
        self.ids += delta.completion_ids
        self.logprobs += delta.logprobs
        self.text.append(delta.text)
        self.truncated = delta.truncated

    def interrupt(self) -> None:
        """The current part ends here (a hold); the next one continues from these tokens."""
        self.versions += [self.version] * (len(self.ids) - len(self.versions))
        self.text, self.parts = [], self.parts + 1

    def sample(self, engine: GenerationEngine) -> Sample:
        versions = self.versions + [self.version] * (len(self.ids) - len(self.versions))
        # one part: the engine's own text; several: the text of them all
        text = "".join(self.text) if self.parts == 1 else engine.decode(self.ids)
        return Sample(self.ids, self.logprobs, text, self.truncated, versions=versions)


@dataclass
class StreamReport:
    """What one `advance` hands back to the driver."""
    finished: list[tuple[str, Sample]]  # (request id, its sample, `versions` set)
    version: int  # the weights the engine holds now
    running: int  # requests still in the engine (or held)
    busy_s: float  # seconds spent stepping the engine since the stream began
    interrupted: dict[str, int]  # requests holds have interrupted since the stream began, by cause (HOLD_CAUSES)
    incarnation: str = ""  # the actor's process: another one after a restart (the requests sent before are gone)


class RequestStream:
    def __init__(self, engine: GenerationEngine, partial: bool):
        self.engine, self.partial = engine, partial
        self.running: dict[str, _Progress] = {}
        self.held: list[_Progress] = []  # interrupted by `hold` (or submitted during one), added again by `release`
        self.finished: list[tuple[str, Sample]] = []  # handed back by the next `advance`
        self.busy_s, self.interrupted = 0.0, Counter({cause: 0 for cause in HOLD_CAUSES})

    def submit(self, requests: list[Request], version: int) -> None:
        for request in requests:
            self.engine.add_request(request.id, request.prompt_ids, request.sampling)
            self.running[request.id] = _Progress(request, version)

    def queue(self, requests: list[Request], version: int) -> None:
        """Requests that arrive while the stream is held: the engine gets them at `release`."""
        self.held += [_Progress(request, version) for request in requests]

    def advance(self, seconds: float, version: int) -> StreamReport:
        """Step the engine for `seconds` (less once nothing runs); every request that finished meanwhile."""
        began = time.perf_counter()
        while self.running and time.perf_counter() - began < seconds:
            self._step()
        return self.report(version)

    def report(self, version: int) -> StreamReport:
        finished, self.finished = self.finished, []
        return StreamReport(finished, version, len(self.running) + len(self.held), self.busy_s,
                            dict(self.interrupted))

    def _step(self) -> None:
        began = time.perf_counter()
        for request_id, delta, finished in self.engine.step():
            progress = self.running[request_id]
            progress.add(delta)
            if finished:
                del self.running[request_id]
                self.finished.append((request_id, progress.sample(self.engine)))
        self.busy_s += time.perf_counter() - began

    def hold(self, cause: str) -> None:
        """Before the engine's weights change (`push`) or it generates for another caller (`eval`): nothing of the
        stream runs."""
        if not self.partial:
            while self.running:
                self._step()
            return
        if self.running:
            self.engine.abort(list(self.running))
            self.interrupted[cause] += len(self.running)
        for progress in self.running.values():
            progress.interrupt()
        self.held += self.running.values()
        self.running = {}

    def release(self, version: int) -> None:
        """Continue every held request on the weights `version`."""
        held, self.held = self.held, []
        for progress in held:
            request, done = progress.request, len(progress.ids)
            seed = request.sampling.seed
            # a part's seed of its own: the continuation must not replay the first part's random stream
            sampling = replace(request.sampling, max_new_tokens=request.sampling.max_new_tokens - done,
                               seed=None if seed is None else seed + 7919 * done)
            self.engine.add_request(request.id, request.prompt_ids + progress.ids, sampling)
            progress.version = version
            self.running[request.id] = progress
