"""Requests streamed through one engine (rollout.mode=async), and the weights version of every token they sample.

The driver adds requests of one sample each (`submit`) and has the engine stepped for a slice of time (`advance`),
which hands back the requests that finished; new requests join the running batch at any step. Before anything
changes the engine's weights (a push) or runs another generation on it (an evaluation), the rollout actor `hold`s
the stream and `release`s it after:
- with partial rollouts, `hold` aborts the running requests and keeps what each has sampled; `release` adds each
  again as a continuation (its prompt followed by its tokens so far, the rest of its token budget), so it goes on
  with the new weights from where it stopped. The engine prefills the continuation anew (its KV cache was computed
  with the old weights). Every token keeps the version that sampled it.
- without, `hold` runs the running requests to their end on the old weights first (the push waits for them).
"""

import time
from dataclasses import dataclass, field, replace

from rlhf.engines.base import GenerationEngine, Sample, SamplingSettings


@dataclass
class Request:
    id: str  # the caller's; unique among the stream's requests
    prompt_ids: list[int]
    sampling: SamplingSettings  # its own seed and token budget; one sample


@dataclass
class _Progress:
    request: Request
    version: int  # of the weights sampling its current part
    done: Sample = field(default_factory=lambda: Sample([], [], "", False, versions=[]))  # parts before a hold
    current: Sample | None = None  # the current part so far

    def whole(self) -> Sample:
        """Earlier parts and the current one as one sample (the current one's text and truncation)."""
        part = self.current or Sample([], [], "", False)
        return Sample(self.done.completion_ids + part.completion_ids, self.done.logprobs + part.logprobs, part.text,
                      part.truncated, self.done.versions + [self.version] * len(part.completion_ids))


@dataclass
class StreamReport:
    """What one `advance` hands back to the driver."""
    finished: list[tuple[str, Sample]]  # (request id, its sample, `versions` set)
    version: int  # the weights the engine holds now
    running: int  # requests still in the engine (or held)
    busy_s: float  # seconds spent stepping the engine since the stream began
    interrupted: int  # requests a hold has interrupted since the stream began
    incarnation: str = ""  # the actor's process: another one after a restart (the requests sent before are gone)


class RequestStream:
    def __init__(self, engine: GenerationEngine, partial: bool):
        self.engine, self.partial = engine, partial
        self.running: dict[str, _Progress] = {}
        self.held: list[_Progress] = []  # interrupted by `hold`, added again by `release`
        self.finished: list[tuple[str, Sample]] = []  # finished during a hold, handed back by the next `advance`
        self.busy_s, self.interrupted = 0.0, 0

    def submit(self, requests: list[Request], version: int) -> None:
        for request in requests:
            self.engine.add_request(request.id, request.prompt_ids, request.sampling)
            self.running[request.id] = _Progress(request, version)

    def advance(self, seconds: float, version: int) -> StreamReport:
        """Step the engine until a request finishes or `seconds` have passed."""
        began = time.perf_counter()
        while self.running and not self.finished and time.perf_counter() - began < seconds:
            self._step()
        finished, self.finished = self.finished, []
        return StreamReport(finished, version, len(self.running) + len(self.held), self.busy_s, self.interrupted)

    def _step(self) -> None:
        began = time.perf_counter()
        for request_id, sample, finished in self.engine.step():
            progress = self.running[request_id]
            progress.current = sample
            if finished:
                del self.running[request_id]
                self.finished.append((request_id, self._finish(progress)))
        self.busy_s += time.perf_counter() - began

    def _finish(self, progress: _Progress) -> Sample:
        sample = progress.whole()
        if progress.done.completion_ids:  # several parts: the text of them all
            sample.text = self.engine.decode(sample.completion_ids)
        return sample

    def hold(self) -> None:
        """Before the engine's weights change or it generates for another caller: nothing of the stream runs."""
        if not self.partial:
            while self.running:
                self._step()
            return
        if self.running:
            self.engine.abort(list(self.running))
            self.interrupted += len(self.running)
        for progress in self.running.values():
            progress.done = progress.whole()
            progress.current = None
        self.held += self.running.values()
        self.running = {}

    def release(self, version: int) -> None:
        """Continue every held request on the weights `version`."""
        held, self.held = self.held, []
        for progress in held:
            request, done = progress.request, progress.done
            remaining = request.sampling.max_new_tokens - len(done.completion_ids)
            seed = request.sampling.seed
            # a part's seed of its own: the continuation must not replay the first part's random stream
            sampling = replace(request.sampling, max_new_tokens=remaining,
                               seed=None if seed is None else seed + 7919 * len(done.completion_ids))
            self.engine.add_request(request.id, request.prompt_ids + done.completion_ids, sampling)
            progress.version = version
            self.running[request.id] = progress
