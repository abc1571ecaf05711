"""Hosts one generation engine, and knows which weights it holds."""

import uuid
from contextlib import contextmanager

import ray

from rlhf.console import capture_output
from rlhf.engines.base import EngineSettings, Sample, SamplingSettings
from rlhf.rollout.engine_state import StaleWeightsError, WeightState, WeightsUpdatingError
from rlhf.rollout.stream import HOLD_CAUSES, Request, RequestStream, StreamReport
from rlhf.training.memory import building

__all__ = ["RolloutActor", "StaleWeightsError", "WeightsUpdatingError"]  # the errors' old home


@ray.remote
class RolloutActor:
    """An engine is built when the actor is first created, in the start-up order `launch_actors` chooses (engines
    that share a GPU one after another: vLLM takes every drop of the GPU's free memory during its start-up for its
    own). After a crash Ray rebuilds the actor but not its engine: the driver starts it (`start`) when it waits for
    the restart, at a moment when nothing else allocates on that GPU, then pushes the current weights."""

    def __init__(self, engine: str, model_path: str, settings: EngineSettings, seed: int):
        capture_output()  # into <output_dir>/logs/<role>-<index>.log (rlhf/console.py)
        self.args = (engine, model_path, settings, seed)
        self.engine = None
        self.weights = WeightState()  # the version it holds; whether an update is under way or stopped half-way
        self.in_group = False  # a member of the NCCL route's weight group
        self.stream = None  # rollout.mode=async: the requests streamed through the engine (submit / advance)
        self.incarnation = uuid.uuid4().hex  # a restart is a new process: the stream's requests are gone with the old
        if not ray.get_runtime_context().was_current_actor_reconstructed:
            with building():
                self.start()

    def start(self) -> None:
        """Build the engine (a no-op once built)."""
        if self.engine is not None:
            return
        engine, model_path, settings, seed = self.args
        if engine == "vllm":
            from rlhf.engines.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(model_path, settings, seed)
        else:
            from rlhf.engines.hf_engine import HFEngine

            self.engine = HFEngine(model_path, settings, seed)

    def started(self) -> bool:
        return self.engine is not None

    def _engine(self):
        if self.engine is None:
            raise StaleWeightsError("the engine restarted after a crash and waits for the driver to start it")
        return self.engine

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings,
                 version: int | None = None) -> list[list[Sample]]:
        """`version`: the oldest weights the caller accepts (None: any). A restarted actor is back at version 0;
        newer weights than asked for are fine (a push that overtook a one-step-off-policy rollout)."""
        engine = self._engine()
        self.weights.check(version)
        with self._stream_held("eval"):
            return engine.generate(prompts, n, sampling)

    # rollout.mode=async: requests streamed through the engine, which the driver steps slice by slice
    def submit(self, requests: list[Request], partial: bool) -> None:
        if self.stream is None:
            self.stream = RequestStream(self._engine(), partial)
        if self.weights.blocked:  # the engine gets them when the update ends (`_updated`)
            self.stream.queue(requests, self.weights.version)
        else:
            self.stream.submit(requests, self.weights.version)

    def advance(self, seconds: float) -> StreamReport:
        """Step the streamed requests for at most `seconds` (less once none runs); what finished. Nothing steps while
        a weight update is under way."""
        if self.stream is None:
            report = StreamReport([], self.weights.version, 0, 0.0, {cause: 0 for cause in HOLD_CAUSES})
        elif self.weights.blocked:
            report = self.stream.report(self.weights.version)
        else:
            report = self.stream.advance(seconds, self.weights.version)
        report.incarnation = self.incarnation
        return report

    @contextmanager
    def _stream_held(self, cause: str):
        """Nothing of the stream runs meanwhile (another generation runs); it goes on after."""
        if self.stream is not None:
            self.stream.hold(cause)
        try:
            yield
        finally:
            if self.stream is not None and self.engine is not None:
                self.stream.release(self.weights.version)

    # A weight update: `pause`, the load (one call, or begin / one bucket per call / finish on the GPU routes), then
    # `_updated`. Between the calls of a GPU route's push other driver threads call this actor (an episode's next
    # turn, the async producer, a one-step-off rollout) while the engine's layers wait for their weights (vLLM 0.33
    # puts them on the meta device, and its add_request / step check nothing): until the update ends nothing
    # generates, streamed requests wait with the held ones, and `generate` asks its caller to come back.
    def pause(self) -> None:
        """A weight update begins: the stream is held (without partial rollouts its running requests run to their
        end first: the route waits for that under rollout.drain_timeout_s, not the push's timeout)."""
        self._engine()
        if self.stream is not None:
            self.stream.hold("push")
        self.weights.begin()

    def _updated(self, version: int) -> None:
        self.weights.finish(version)
        if self.stream is not None:
            self.stream.release(version)

    @contextmanager
    def _update(self):
        """A weight update in this one call: an engine whose load raised holds weights of two versions."""
        self.pause()
        try:
            yield
        except BaseException:
            self.abandon_weight_update()
            raise

    def abandon_weight_update(self) -> None:
        """The route gave up half-way: the engine holds parts of two weight versions and refuses to generate (as a
        restarted one does) until a whole push reaches it."""
        self.weights.abandon()

    def load_weights(self, folder: str, version: int | None = None) -> None:
        engine = self._engine()
        with self._update():
            engine.load_weights(folder)
        self._updated(self.weights.version + 1 if version is None else version)

    def load_state(self, exported: dict, version: int) -> None:
        """Object-store route: the learner's exported arrays (Ray fetches them to this node, read in place)."""
        from rlhf.training.weight_transfer import from_arrays

        engine = self._engine()
        with self._update():
            engine.load_state(from_arrays(exported))
        self._updated(version)

    # CUDA-IPC route: begin, one load_bucket per bucket, finish (which sets the version)
    def begin_weight_update(self) -> None:
        engine = self._engine()
        with self._update():
            engine.begin_weight_update()

    def load_bucket(self, bucket: dict) -> None:
        with self._update():
            self._engine().load_bucket(bucket)

    def finish_weight_update(self, version: int) -> None:
        with self._update():
            self._engine().finish_weight_update()
        self._updated(version)

    # NCCL route (UNTESTED: needs two GPUs): join once; per push begin, receive_bucket per bucket, finish
    def join_weight_group(self, host: str, port: int, rank: int, world: int, bucket_bytes: int) -> None:
        self._engine().join_nccl(host, port, rank, world, bucket_bytes)
        self.in_group = True

    def in_weight_group(self) -> bool:
        """False in a new process (a restart): the group must be formed again for it."""
        return self.in_group

    def leave_weight_group(self) -> None:
        self._engine().leave_nccl()
        self.in_group = False

    def receive_bucket(self, bucket: dict) -> None:
        with self._update():
            self._engine().receive_bucket(bucket)

    def sleep(self) -> None:
        if self.engine is not None:  # one not yet started holds no memory
            self.engine.sleep()

    def wake_up(self, tags: list[str] | None = None) -> None:
        if self.engine is not None:
            self.engine.wake_up(tags)

    def device_info(self) -> dict:
        from rlhf.training.memory import device_info

        return device_info(self._engine().device)

    def preflight(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> dict:
        from rlhf.training.memory import peak_rss_gib, report

        self.engine.generate(prompts, n, sampling)
        # vLLM takes its share of the GPU up front (weights + KV cache), outside torch's allocator statistics
        planned = getattr(self.engine, "planned_gpu_fraction", None)
        return report("rollout", peak_rss_gib(), self.engine.device, gpu_planned_fraction=planned)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    def ready(self) -> bool:
        return True
