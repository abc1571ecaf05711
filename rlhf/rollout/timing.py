"""Phase timers: a step's wall-clock seconds per phase (`PhaseTimer`), or none (`NO_TIMER`, work outside a step)."""

import contextlib
import time
from contextlib import contextmanager


class _NoTimer:
    """A phase timer that times nothing (work outside a step)."""

    def __call__(self, name: str):
        return contextlib.nullcontext()


NO_TIMER = _NoTimer()


class PhaseTimer:
    """Wall-clock seconds per phase of a step, plus the whole step and the CPU seconds the driver process spent
    in it (all its threads: the loop, Ray's serialisation, a background rollout's bookkeeping)."""

    def __init__(self):
        self.start, self.cpu_start, self.phases = time.perf_counter(), time.process_time(), {}

    @contextmanager
    def __call__(self, name: str):
        began = time.perf_counter()
        yield
        self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - began

    def merge(self, other: "PhaseTimer") -> None:
        for name, seconds in other.phases.items():
            self.phases[name] = self.phases.get(name, 0.0) + seconds

    def seconds(self) -> dict[str, float]:
        out = {f"time/{k}": v for k, v in self.phases.items()}
        out["time/step"] = time.perf_counter() - self.start
        out["time/driver_cpu"] = time.process_time() - self.cpu_start
        return out
