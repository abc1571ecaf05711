"""What the asynchronous schedule (rlhf/rollout/asynchronous.py) knows of each admitted group and of each rollout
engine."""

import threading
from collections import Counter
from dataclasses import dataclass, field

from rlhf.groups import Groups


@dataclass
class Job:
    """One admitted group: its prompt row, its engine, its samples as they come back."""
    number: int  # admission order, from 0 in this process
    row: int  # index of its prompt row in the data
    work: object  # the rollout source's group (start / receive / result)
    batch: object  # its row, prepared (a PromptBatch of one)
    engine: int
    admitted_at: int  # the policy version (updates) of the engines' newest weights when it was admitted
    lock: threading.Lock = field(default_factory=threading.Lock)  # its samples come back on several threads
    complete: bool = False  # every sample is back (the group went to be scored once)
    requests: int = 0  # sent, to tell request ids apart
    groups: Groups | None = None  # once scored
    oldest: int | None = None  # the policy version of its oldest sampled token, once finished


@dataclass
class Engine:
    """What the producer knows of one rollout engine."""
    actor: object
    running: int = 0  # requests sent and not back
    alive: bool = True
    refused: bool = False  # restarted: takes no group until it reports the current weights
    polled_at: float = 0.0  # when an engine without work was last asked how it is (a refused one: its weights)
    pending: object = None  # its advance call in flight
    busy_s: float = 0.0  # seconds it spent generating, over all its processes
    interrupted: Counter = field(default_factory=Counter)  # requests holds interrupted, by cause, likewise
    reported: tuple = (0.0, {})  # its current process's own counts of both, at its last report
    incarnation: str | None = None  # the actor process it last heard from

    def count(self, report) -> None:
        """Add what the engine did since its last report (a new process counts from 0)."""
        if self.incarnation is None:
            self.reported = (0.0, {})
        busy_before, interrupted_before = self.reported
        self.busy_s += report.busy_s - busy_before
        for cause, count in report.interrupted.items():
            self.interrupted[cause] += count - interrupted_before.get(cause, 0)
        self.reported, self.incarnation = (report.busy_s, report.interrupted), report.incarnation
