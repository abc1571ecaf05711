"""Entry point: `python -m rlhf.train [overrides]` (add `-m` for a Hydra sweep)."""

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from rlhf.config import load_config

log = logging.getLogger(__name__)


def user_message(err: BaseException) -> str | None:
    """What a user's data, config or reward code caused, as the message to show without a traceback (None for
    anything else: a bug or a crash keeps its traceback)."""
    import ray

    from actors.launch import ActorBuildError
    from actors.placement import PlacementError
    from rlhf.checkpoint import CheckpointWriteError
    from rlhf.driver import RolloutMismatchError, UnscorableRewardsError
    from rlhf.rewards.scoring import RewardFunctionError
    from rlhf.training.policy import NonFiniteLossError

    user_errors = (ValueError, FileNotFoundError, FileExistsError, MemoryError, ActorBuildError, PlacementError, CheckpointWriteError,
                   UnscorableRewardsError, RolloutMismatchError, RewardFunctionError, NonFiniteLossError)
    if not isinstance(err, user_errors):
        return None
    # an error raised in an actor reaches the driver wrapped, with the actor's traceback in its text
    cause = err.cause if isinstance(err, ray.exceptions.RayTaskError) else err
    return f"{type(cause).__name__}: {cause}"


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    os.environ.setdefault("WANDB_SILENT", "true")
    # a run owns its wandb service: one inherited from a parent process (wandb passes its own to children through
    # WANDB_SERVICE) outlives a killed run and holds its run id, so that its resume is refused ("run ID ... is in use")
    os.environ.pop("WANDB_SERVICE", None)
    from rlhf.console import finished_table
    from rlhf.driver import run
    from rlhf.stopping import StopRequest

    try:
        with StopRequest() as stop:
            metrics = run(load_config(cfg), stop)
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: stopped at once, actors and Ray cleaned up
        print("stopped at once: no checkpoint of the step in flight", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        message = user_message(err)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", message)
        print(f"Error: {message}\n(set HYDRA_FULL_ERROR=1 for the traceback)", file=sys.stderr)
        sys.exit(1)
    if stop.requested:
        print(f"stopped by signal after step {stop.after_step}: resume with resume=auto", file=sys.stderr)
        sys.exit(stop.exit_code)
    log.info("%s", finished_table(metrics))
    return metrics.get("reward", float("nan"))


if __name__ == "__main__":
    main()
