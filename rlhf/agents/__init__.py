"""Multi-turn episodes with tools and environments (TRL's contracts). `EndEpisode`: what a tool raises to end its
episode."""

from rlhf.agents.tools import EndEpisode

__all__ = ["EndEpisode"]
