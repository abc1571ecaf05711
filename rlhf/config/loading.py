"""From Hydra's composed config to the typed, checked `Config`."""

from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rlhf.config.checks import validate
from rlhf.config.schema import Config, RewardFunctionConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_config(*overrides: str) -> DictConfig:
    """The project's Hydra config with overrides, as `python -m rlhf.train` would compose it (for scripts
    and tests; `output_dir` must be among the overrides, there being no Hydra run folder)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def load_config(cfg: DictConfig) -> Config:
    """Check a composed config against the schema and return it as typed objects."""
    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg, resolve=True))
    config: Config = OmegaConf.to_object(merged)
    choose_async_correction(config)
    add_environment_reward(config)
    validate(config)
    return config


def choose_async_correction(config: Config) -> None:
    """An async run trains on samples of earlier weights (stale by up to max_staleness updates, or continued across a
    push): unless a rollout correction was chosen, it takes `rollout.async_correction` (AReaL's behaviour-weight cap),
    the decoupled PPO objective AReaL trains with. The rollout correction `none` is refused there anyway."""
    r, correction = config.rollout, config.algo.correction
    off_policy = r.max_staleness > 0 or r.partial_rollouts
    if r.mode == "async" and off_policy and correction.mode == "none":
        config.algo.correction = replace(r.async_correction, max_mismatch_kl=correction.max_mismatch_kl)


def add_environment_reward(config: Config) -> None:
    """TRL adds an environment's get_reward() to the reward functions by itself (weight 1, logged under the class's
    name): so do we, unless reward.functions lists `env` already (with the weight it gives). Probes the factory:
    an environment that cannot be built is named here, before anything starts."""
    from rlhf.agents.environment import environment_reward_label

    if any(f.name == "env" for f in config.reward.functions):
        return
    if config.env.agent and not config.reward.functions and not config.reward.models:
        # an agent that scores its episodes (rlhf/agents/openai_agents.py): its return is the reward
        config.reward.functions = [RewardFunctionConfig(name="env", label="agent")]
        return
    label = environment_reward_label(config.env)
    if label is not None:
        config.reward.functions = [*config.reward.functions, RewardFunctionConfig(name="env", label=label)]
