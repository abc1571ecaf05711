"""Recorders standing in for what cannot run here (vLLM's GPU weight transfer): a rollout engine that records its calls,
and the rollout actor's own code over it. In a module of its own so that Ray workers can import them."""

import time

from actors.rollout import RolloutActor
from rlhf.engines.base import GenerationEngine, Sample


class RecordingEngine(GenerationEngine):
    """Every call, in order; a streamed request gains one token per step (of `step_s` seconds) until its budget is
    spent."""

    def __init__(self, step_s: float = 0.0):
        self.calls, self.budget, self.step_s = [], {}, step_s

    def generate(self, prompts, n, sampling):
        self.calls.append("generate")
        return [[Sample([1], [-0.5], "a", False) for _ in range(n)] for _ in prompts]

    def load_weights(self, folder):
        self.calls.append("load")

    def load_state(self, state):
        self.calls.append("load")

    def begin_weight_update(self):
        self.calls.append("begin")

    def load_bucket(self, bucket):
        self.calls.append("bucket")

    def finish_weight_update(self):
        self.calls.append("finish")

    def add_request(self, request_id, prompt, sampling):
        self.calls.append(f"add {request_id}")
        self.budget[request_id] = sampling.max_new_tokens

    def step(self):
        self.calls.append("step")
        time.sleep(self.step_s)
        out = []
        for request_id in list(self.budget):
            self.budget[request_id] -= 1
            if self.budget[request_id] == 0:
                del self.budget[request_id]
            out.append((request_id, Sample([7], [-0.25], "x", False), request_id not in self.budget))
        return out

    def abort(self, request_ids):
        self.calls.append("abort")
        for request_id in request_ids:
            del self.budget[request_id]

    def decode(self, token_ids):
        return "x" * len(token_ids)


class RecordingRollout(RolloutActor.__ray_actor_class__):
    """The rollout actor's code (updating state, stream, versions) over a recording engine; its `settings` are the
    engine's seconds per step."""

    def start(self):
        if self.engine is None:
            self.engine = RecordingEngine(self.args[2] or 0.0)

    def calls(self) -> list:
        return self.engine.calls
