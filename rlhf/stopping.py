"""Stopping a run by signal: Ctrl-C (SIGINT) from a researcher, SIGTERM from a scheduler.

The first signal asks the run to stop at the next safe point: the step in flight is finished (a step is the unit a
checkpoint can resume from), a checkpoint of it is written (`checkpoint.on_stop`), and the run ends as after an
error: actors and the Ray instance it started are stopped, its shared-memory folder removed; the exit code is
128 + the signal (130, 143). A second signal stops at once (KeyboardInterrupt), still through the same clean-up,
without the checkpoint. `resume=auto` then continues from the stop's checkpoint as from any other.
"""

import logging
import signal
import threading

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self):
        self.signal: int | None = None  # the first signal received
        self.after_step: int | None = None  # the last step the run finished before it stopped
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        self.install()
        return self

    def install(self) -> None:
        """Take the signals (again: `ray.init` puts a crash handler of its own on SIGTERM, which aborted the driver)."""
        if threading.current_thread() is not threading.main_thread():  # Python takes signals in the main thread only
            return
        for number in SIGNALS:
            previous = signal.signal(number, self._handle)
            self._previous.setdefault(number, previous)

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt  # the second: now
        self.signal = number
        log.warning("%s received: the run stops after the step in flight, with a checkpoint (%s again stops it "
                    "at once)", signal.Signals(number).name, signal.Signals(number).name)

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        return 128 + self.signal if self.signal else 0
