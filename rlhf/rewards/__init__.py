"""Rewards: the BLEU metric, built-in reward functions, the scorer that runs them, and how several
objectives combine."""

from rlhf.rewards import remote, similarity  # noqa: F401  (they register their reward functions)
from rlhf.rewards.aggregation import REWARD_AGGREGATIONS
from rlhf.rewards.bleu import bleu_score
from rlhf.rewards.functions import REWARD_FUNCTIONS
from rlhf.rewards.multi_objective import lsc_transform, pama_weights
from rlhf.rewards.scoring import RewardFunctionError, RewardScorer

__all__ = ["REWARD_AGGREGATIONS", "REWARD_FUNCTIONS", "RewardFunctionError", "RewardScorer", "bleu_score",
           "lsc_transform", "pama_weights"]
