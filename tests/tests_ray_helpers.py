"""Waiting on Ray actors in tests without racing the clock: ask Ray's actor table, poll with a deadline."""

import time

import ray


def actor_state(actor) -> dict:
    """Ray's actor table row of `actor`: State (ALIVE, RESTARTING, DEAD, ...), NumRestarts, Pid."""
    return ray._private.state.actors(actor._actor_id.hex())


def back_after_restart(actor, restarts: int) -> bool:
    """`actor` has been rebuilt after its `restarts`-th crash (its constructor has finished)."""
    state = actor_state(actor)
    return state["State"] == "ALIVE" and state["NumRestarts"] >= restarts


def wait_until(condition, what: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        time.sleep(0.2)
