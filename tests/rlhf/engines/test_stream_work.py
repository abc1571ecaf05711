"""The host work of streamed requests (rollout.mode=async) does not grow with their length: the vLLM engine asks for
DELTA outputs and the stream keeps the tokens, checked against a stand-in for vLLM's LLMEngine that hands out what
the requested output kind says and counts every element read from what it hands out."""

from collections.abc import Sequence
from types import SimpleNamespace

from vllm.sampling_params import RequestOutputKind

from rlhf.engines.base import SamplingSettings
from rlhf.rollout.stream import Request, RequestStream
from rlhf.engines.vllm_engine import VLLMEngine


class Counted(Sequence):
    """A list handed out by the engine; every element read from it is counted."""

    def __init__(self, items: list, counter: list):
        self.items, self.counter = items, counter

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        self.counter[0] += 1
        return self.items[index]

    def __iter__(self):
        for item in self.items:
            self.counter[0] += 1
            yield item


class LLMEngineStandIn:
    """vLLM's LLMEngine as the streaming calls see it: each step samples token `position` for every request and hands
    out its whole history (CUMULATIVE, vLLM's default) or only the new token (DELTA)."""

    def __init__(self):
        self.requests, self.read = {}, [0]

    def add_request(self, request_id, prompt, params):
        self.requests[request_id] = (params.output_kind, [], params.max_tokens)

    def abort_request(self, request_ids):
        for request_id in request_ids:
            del self.requests[request_id]

    def step(self):
        outputs = []
        for request_id, (kind, history, budget) in list(self.requests.items()):
            history.append(len(history))
            finished = len(history) == budget
            new = history[-1:] if kind == RequestOutputKind.DELTA else list(history)
            logprobs = [{token: SimpleNamespace(logprob=-0.5)} for token in new]
            text = "t" * (len(new))
            outputs.append(SimpleNamespace(request_id=request_id, finished=finished, outputs=[SimpleNamespace(
                token_ids=Counted(new, self.read), logprobs=Counted(logprobs, self.read), text=text,
                finish_reason="length" if finished else None)]))
            if finished:
                del self.requests[request_id]
        return outputs


def vllm_engine() -> tuple[VLLMEngine, LLMEngineStandIn]:
    engine, standin = VLLMEngine.__new__(VLLMEngine), LLMEngineStandIn()
    engine.llm = SimpleNamespace(llm_engine=standin)
    return engine, standin


def test_the_work_of_a_step_does_not_grow_with_the_requests_length():
    engine, standin = vllm_engine()
    stream = RequestStream(engine, partial=True)
    length = 300
    stream.submit([Request(f"r{i}", [1, 2], SamplingSettings(length, 1.0, 1.0, seed=i)) for i in range(4)], 0)
    reads = []
    while stream.running:
        before = standin.read[0]
        stream._step()
        reads.append(standin.read[0] - before)
    # every step reads each request's new token and its logprob, at the first token as at the last
    assert len(reads) == length and reads[0] == reads[-1] == 4 * 2
    finished = dict(stream.report(0).finished)
    assert sorted(finished) == ["r0", "r1", "r2", "r3"]
    sample = finished["r0"]
    assert sample.completion_ids == list(range(length)) and sample.logprobs == [-0.5] * length
    assert sample.text == "t" * length and sample.truncated and sample.versions == [0] * length


def test_a_slice_hands_back_every_request_that_finished_in_it():
    engine, _ = vllm_engine()
    stream = RequestStream(engine, partial=True)
    stream.submit([Request(f"r{i}", [1], SamplingSettings(3 + i, 1.0, 1.0)) for i in range(4)], 0)
    report = stream.advance(60.0, 0)  # the slice ends when nothing runs, not at the first request that finished
    assert sorted(request_id for request_id, _ in report.finished) == ["r0", "r1", "r2", "r3"]
    assert report.running == 0


def test_a_continuation_keeps_the_tokens_of_both_parts_and_their_versions():
    engine, _ = vllm_engine()
    engine.decode = lambda ids: "d" * len(ids)  # a request in several parts: the text of them all
    stream = RequestStream(engine, partial=True)
    stream.submit([Request("r", [1], SamplingSettings(5, 1.0, 1.0, seed=3))], 0)
    stream._step()
    stream._step()
    stream.hold("push")
    stream.release(1)
    finished = dict(stream.advance(60.0, 1).finished)
    # the continuation's engine request starts its own count: three more tokens, 0, 1, 2
    assert finished["r"].completion_ids == [0, 1, 0, 1, 2] and finished["r"].versions == [0, 0, 1, 1, 1]
    assert finished["r"].text == "ddddd" and stream.report(1).interrupted == {"push": 1, "eval": 0}
