"""Nothing generates while a push is half-loaded: the rollout actor's own code over an engine that records its calls
(vLLM's GPU weight transfer cannot run here), the CUDA-IPC route driving it with a recording learner, and vLLM's
prefix-cache reset checked."""

import threading
import time
from types import SimpleNamespace

import pytest
import ray

import actors.rollout
from actors.rollout import StaleWeightsError, WeightsUpdatingError
from actors.weight_sync import CudaIpcRoute, ReloadingRoute, WeightSyncTimeout
from rlhf.engines.base import SamplingSettings
from rlhf.rollout.stream import Request
from rlhf.rollout.generation import generate
from tests_engine_helpers import RecordingRollout

SAMPLING = SamplingSettings(max_new_tokens=3, temperature=1.0, top_p=1.0, seed=5)


def in_process(monkeypatch) -> RecordingRollout:
    monkeypatch.setattr(actors.rollout.ray, "get_runtime_context",
                        lambda: SimpleNamespace(was_current_actor_reconstructed=False))
    return RecordingRollout("recording", "no model", None, 0)


def during_update(calls: list) -> list:
    return calls[calls.index("begin") + 1:calls.index("finish")]


def test_while_a_weight_update_is_open_nothing_generates_and_streamed_requests_wait(monkeypatch):
    rollout = in_process(monkeypatch)
    rollout.submit([Request("a", [1, 2], SAMPLING)], partial=True)
    rollout.advance(0.01)  # "a" runs to its end on version 0
    rollout.pause()
    rollout.begin_weight_update()
    # what other driver threads send between the route's calls: an episode's next turn, the async producer
    rollout.submit([Request("b", [1, 2], SAMPLING)], partial=True)
    report = rollout.advance(1.0)
    with pytest.raises(WeightsUpdatingError):
        rollout.generate([[1, 2]], 1, SAMPLING)
    rollout.load_bucket({})
    assert during_update(rollout.calls() + ["finish"]) == ["bucket"] and report.running == 1
    rollout.finish_weight_update(1)
    # "b" reached the engine after the update, and samples on the new weights
    assert rollout.calls()[-2:] == ["finish", "add b"]
    finished = dict(rollout.advance(1.0).finished)
    assert finished["b"].versions == [1, 1, 1]
    assert rollout.generate([[1, 2]], 1, SAMPLING, version=1)[0][0].completion_ids == [1]


def test_an_update_that_stops_half_way_leaves_the_engine_refusing_until_a_whole_one_lands(monkeypatch):
    rollout = in_process(monkeypatch)
    rollout.pause()
    rollout.begin_weight_update()
    rollout.abandon_weight_update()  # the route gave up: some layers hold new weights, others old
    with pytest.raises(StaleWeightsError, match="stopped half-way"):
        rollout.generate([[1, 2]], 1, SAMPLING)
    rollout.load_weights("folder", 2)
    assert rollout.generate([[1, 2]], 1, SAMPLING, version=2)


@ray.remote(num_cpus=0)
class LearnerRecorder:
    """Learner rank 0 of the CUDA-IPC route: two buckets, each packed slowly (the window other threads fall into)."""

    def prepare_ipc_push(self, bucket_bytes):
        return 2

    def ipc_bucket(self, index):
        time.sleep(0.3)
        return {"names": [f"bucket{index}"]}

    def finish_ipc_push(self):
        pass


class Ranks:
    def __init__(self, rank):
        self.ranks = [rank]

    def call(self, method, *args):
        return [getattr(rank, method).remote(*args) for rank in self.ranks]


def test_a_cuda_ipc_push_keeps_other_threads_generations_out_of_its_window(ray_cluster):
    engine = ray.remote(num_cpus=0)(RecordingRollout).remote("recording", "no model", None, 0)
    route = CudaIpcRoute(Ranks(LearnerRecorder.remote()), [engine], timeout_s=30, drain_timeout_s=30, bucket_mb=1)
    ray.get(engine.submit.remote([Request("s", [1], SamplingSettings(1000, 1.0, 1.0, seed=1))], True))
    samples, reached = [], []
    pushing = threading.Thread(target=lambda: reached.append(route.push()))
    pushing.start()
    time.sleep(0.2)  # inside the push: between its actor calls
    while pushing.is_alive():  # a one-step-off rollout or an episode's turn, and the async producer, meanwhile
        ray.get(engine.submit.remote([Request(f"t{len(samples)}", [1], SAMPLING)], True))
        ray.get(engine.advance.remote(0.01))
        samples += generate(SimpleNamespace(rollouts=[engine]), [[1, 2]], 1, SAMPLING)  # asked again till the end
    calls = ray.get(engine.calls.remote())
    assert reached == [[0]] and samples
    assert during_update(calls) == ["bucket", "bucket"]  # no generate, no step, no request added in the window
    assert calls[calls.index("finish") + 1:calls.index("finish") + 3] == ["add s", "add t0"]  # the stream went on after
    ray.kill(engine)


class FolderRoute(ReloadingRoute):
    """A reloading route whose weights are a folder name (the shm route without a learner)."""

    name, load_method = "folder", "load_weights"

    def publish(self):
        return "folder"


def test_without_partial_rollouts_the_wait_for_running_requests_has_its_own_bound(ray_cluster):
    # the running requests finish on the old weights before the load: ~1 s here, 8k tokens at 40 ms a step on a GPU
    engine = ray.remote(num_cpus=0)(RecordingRollout).remote("recording", "no model", 0.01, 0)
    ray.get(engine.submit.remote([Request("long", [1], SamplingSettings(100, 1.0, 1.0))], False))
    route = FolderRoute(None, [engine], timeout_s=0.5, drain_timeout_s=30)
    assert route.push() == [0]  # the load itself is quick: within rollout.sync_timeout_s
    assert dict(ray.get(engine.advance.remote(0.0)).finished)["long"].versions == [0] * 100
    ray.get(engine.submit.remote([Request("longer", [1], SamplingSettings(300, 1.0, 1.0))], False))
    route.drain_timeout_s = 0.5
    with pytest.raises(WeightSyncTimeout, match=r"route folder: rollout engine 0 did not finish its running requests "
                                                r"before a weight update .* within rollout.drain_timeout_s=0.5 s"):
        route.push()
    ray.kill(engine)


def test_a_push_that_reaches_no_engine_says_so(ray_cluster):
    engine = ray.remote(num_cpus=0)(RecordingRollout).remote("recording", "no model", None, 0)
    route = CudaIpcRoute(Ranks(LearnerRecorder.remote()), [engine], timeout_s=30, drain_timeout_s=30, bucket_mb=1)
    ray.get(engine.__ray_call__.remote(lambda self: setattr(self, "engine", None)))  # as after a restart
    assert route.push() == [] and route.version == 1
    ray.kill(engine)


def test_vllm_refusing_to_reset_its_prefix_cache_stops_the_load():
    from rlhf.engines.vllm_engine import VLLMEngine

    engine = VLLMEngine.__new__(VLLMEngine)
    # vLLM returns False (and only logs) while running requests hold KV blocks of the old weights
    engine.llm = SimpleNamespace(collective_rpc=lambda *args, **kwargs: None, reset_prefix_cache=lambda: False)
    with pytest.raises(RuntimeError, match="did not reset its prefix cache"):
        engine.load_weights("folder")
    with pytest.raises(RuntimeError, match="did not reset its prefix cache"):
        engine.finish_weight_update()
