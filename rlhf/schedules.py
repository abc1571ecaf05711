"""Old path of the schedules, kept for rlhf/sft's imports: the code is in `rlhf.rollout` (schedules, recovery)."""

from rlhf.rollout.recovery import ACTOR_DIED, ACTOR_RESTARTED
from rlhf.rollout.timing import PhaseTimer

__all__ = ["ACTOR_DIED", "ACTOR_RESTARTED", "PhaseTimer"]
