"""Old path of the rollout side, kept for rlhf/sft's imports: the code is in `rlhf.rollout` (sources, scoring)."""

from rlhf.rollout.scoring import reward_columns
from rlhf.rollout.sources import rollout_source

__all__ = ["reward_columns", "rollout_source"]
