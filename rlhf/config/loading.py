"""From Hydra's composed config to the typed, checked `Config`."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rlhf.config.checks import validate
from rlhf.config.schema import Config

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
    validate(config)
    return config
