"""The asynchronous schedule's staleness rules, pure: no Ray, no threads, no clock
(`tests/rlhf/rollout/test_staleness.py` plays them over random cases, as AReaL keeps its staleness manager apart).

Versions count policy updates; a group is due by update `deadline` = its oldest token's version + max_staleness (a
running group's oldest token is at least the version of the newest weights when it was admitted).

- Admission (AReaL's rule): at most (W + max_staleness + 1) x P groups are admitted while the newest weights every
  engine holds are W (counted from the stream's start; a batch the critic's warm-up took counts as a version, since it
  trains no policy and pushes nothing), plus the groups that left without training (their slots are freed).
- The pick: the P finished groups due soonest (earliest deadline first, admission order within a deadline), and none
  while the groups due by some update d could not all be trained by then: more of them than this batch takes would be
  left than the updates after this one, up to d, can take.
"""


class Staleness:
    def __init__(self, per_step: int, max_staleness: int, base: int = 0):
        self.per_step, self.max_staleness = per_step, max_staleness
        self.base = self.newest = base  # policy updates when the stream started; the newest weights every engine has
        self.admitted = 0  # groups admitted
        self.retired = 0  # of them, dropped without training (DAPO, stale, lost with their engine)
        self.warmup_batches = 0  # batches the critic's warm-up took (the policy's version stays): P slots each

    def start(self, updates: int) -> None:
        """The stream starts (or resumes) at policy version `updates`, which the engines hold."""
        self.base = self.newest = updates

    def capacity(self) -> int:
        """How many groups may have been admitted by now."""
        versions = self.newest - self.base + self.warmup_batches
        return (versions + self.max_staleness + 1) * self.per_step + self.retired

    def may_admit(self) -> bool:
        return self.admitted < self.capacity()

    def admit(self) -> int:
        """A group is admitted: its number (admission order, from 0)."""
        self.admitted += 1
        return self.admitted - 1

    def retire(self, count: int = 1) -> None:
        """`count` admitted groups leave without training (negative: dropped ones trained after all, as a filler)."""
        self.retired += count

    def warmup_batch(self) -> None:
        """The critic's warm-up took a batch: it counts as a version, or the pipeline would shrink by one batch per
        warm-up step and stop for good once they reach max_staleness + 1."""
        self.warmup_batches += 1

    def pushed(self, version: int) -> None:
        """Weights of policy version `version` reached every engine that takes groups."""
        self.newest = version

    def deadline(self, admitted_at: int, oldest: int | None) -> int:
        """The last update that may train a group admitted at `admitted_at` whose oldest token is `oldest` (None while
        it runs)."""
        return (admitted_at if oldest is None else oldest) + self.max_staleness

    def too_stale(self, now: int, oldest: int) -> bool:
        """A finished group update `now` may no longer train (possible only after an engine restart)."""
        return oldest + self.max_staleness < now

    def pick(self, now: int, finished: list[tuple[int, int]], running: list[int]) -> list[int] | None:
        """The batch for update `now`: the keys of P finished groups, earliest deadline first, or None while it must
        wait. `finished`: (deadline, key) of each finished group not yet trained; `running`: the deadlines of the
        groups admitted and not finished."""
        if len(finished) < self.per_step:
            return None
        batch = sorted(finished)[:self.per_step]
        live = [deadline for deadline, _ in finished] + list(running)
        for due_by in sorted(set(live)):
            due = sum(deadline <= due_by for deadline in live)
            taken = sum(deadline <= due_by for deadline, _ in batch)
            if taken < self.per_step and due - taken > (due_by - now) * self.per_step:
                return None  # a running group is due too soon to be left for later updates
        return [key for _, key in batch]
