"""Rewards: the BLEU metric, built-in reward functions, and the scorer that runs them."""

from rlhf.rewards.bleu import bleu_score
from rlhf.rewards.functions import REWARD_FUNCTIONS
from rlhf.rewards.scoring import RewardFunctionError, RewardResult, RewardScorer

__all__ = ["REWARD_FUNCTIONS", "RewardFunctionError", "RewardResult", "RewardScorer", "bleu_score"]
