"""What a run does with a data row it cannot use (`data.bad_rows`): `error` stops at the first one, naming it;
`skip` drops it, and once the data is read logs how many were dropped with the first few and why."""

import logging

log = logging.getLogger(__name__)
POLICIES = ("error", "skip")


class BadRows:
    SHOWN = 5  # dropped rows named in the log

    def __init__(self, policy: str):
        if policy not in POLICIES:
            raise ValueError(f"data.bad_rows={policy!r} is not valid; choose one of {list(POLICIES)}")
        self.policy, self.dropped = policy, []

    def drop(self, where: str, why: str) -> None:
        if self.policy == "error":
            raise ValueError(f"{where}: {why}")
        self.dropped.append(f"{where}: {why}")

    def report(self, kept: int, what: str) -> None:
        """After a pass over the rows: log the drops, and stop if nothing is left."""
        dropped, self.dropped = self.dropped, []
        if dropped:
            log.warning("data.bad_rows=skip: dropped %d of %d rows of %s; first %s", len(dropped),
                        len(dropped) + kept, what, "; ".join(dropped[:self.SHOWN]))
        if dropped and not kept:
            raise ValueError(f"data.bad_rows=skip dropped every row of {what} ({len(dropped)}); the first: "
                             + "; ".join(dropped[:self.SHOWN]))
