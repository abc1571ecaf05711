"""What a dead actor looks like to the driver, and waiting for Ray to restart one (a restarted engine is started
here)."""

import time
from contextlib import nullcontext

import ray

from actors.launch import ActorBuildError, Actors, build_failure
from rlhf.rollout.engine_state import StaleWeightsError

# What a dead actor looks like to the driver (Ray restarts it unless its restarts are used up).
ACTOR_DIED = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
# ... and what a restarted engine says when asked to generate: it is back at the initial weights.
ACTOR_RESTARTED = (*ACTOR_DIED, StaleWeightsError)


def wait_for_restarts(actors: Actors, timeout_s: float = 300.0, gpu_guard=nullcontext(), only=None) -> None:
    """Until every restartable actor answers; a restarted rollout actor's engine is started here, one at a time and
    under `gpu_guard` (held while the learners train, where engines share their GPU: vLLM's start-up must see no
    other allocation on it). One whose restart failed in its constructor will not come back, nor will one that has
    used its restarts (a new call to it fails at once as dead, where a restarting one waits); one that dies again
    meanwhile is waited for again. `only`: these actors, not every restartable one."""
    deadline = time.time() + timeout_s
    engines = {id(rollout) for rollout in actors.rollouts}
    for actor in only if only is not None else filter(None, actors.stateless()):
        dead_answers = 0
        while True:
            try:
                ray.get(actor.ready.remote(), timeout=max(1.0, deadline - time.time()))
                if id(actor) in engines:
                    with gpu_guard:
                        ray.get(actor.start.remote(), timeout=max(1.0, deadline - time.time()))
                break
            except ACTOR_DIED as err:
                cause = build_failure(err)
                if cause is not None:
                    raise ActorBuildError(f"an actor restarted after a crash could not be built again: {cause}") from err
                dead_answers = dead_answers + 1 if isinstance(err, ray.exceptions.ActorDiedError) else 0
                if dead_answers == 3 or time.time() > deadline:
                    raise
                time.sleep(1.0)
            except ray.exceptions.RayTaskError as err:  # the engine's own start raised
                raise ActorBuildError(f"a rollout engine restarted after a crash could not start again: "
                                      f"{type(err.cause).__name__}: {err.cause}") from err
