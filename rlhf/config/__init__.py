"""Typed views of the Hydra config. The values live in `conf/`; these classes only name and type them.

`load_config` merges a composed config into these schemas, so a misspelt key or a value of the wrong type
fails at start-up with the key's name, and `validate` checks the values the types cannot. By concern:

- `schema`: the dataclasses, one per section of `conf/`
- `checks`: each setting on its own (`validate`), and `micro_batch`, which the learners share with the checks
- `sections`: the rollout mode, the rollout correction, the environment, the evaluation
- `combinations`: settings valid one by one that do not work together (refused)
- `cannot_act`: settings that can never change anything with the rest of the config (warned about)
- `loading`: `compose_config` and `load_config`
"""

from rlhf.config.cannot_act import settings_that_cannot_act
from rlhf.config.checks import micro_batch, validate
from rlhf.config.combinations import check_combinations
from rlhf.config.loading import CONF_DIR, compose_config, load_config
from rlhf.config.schema import (AlgoConfig, CheckpointConfig, Config, CorrectionConfig, CriticAlgoConfig, CriticConfig,
                                DataConfig, EnvConfig, EstimatorConfig, EvalConfig, FaultToleranceConfig, KLConfig,
                                LoggingConfig, LoraConfig, LossConfig, LscConfig, ModelConfig, PamaConfig,
                                PlacementConfig, PreflightConfig, RayConfig, ReferenceConfig, RewardActorConfig,
                                RewardConfig, RewardFunctionConfig, RewardModelConfig, RolloutConfig,
                                SamplingAlgoConfig, TrainConfig, UpdateConfig)
from rlhf.config.sections import validate_correction, validate_env, validate_eval, validate_mode

__all__ = [
    "AlgoConfig", "CheckpointConfig", "Config", "CorrectionConfig", "CriticAlgoConfig", "CriticConfig", "DataConfig",
    "EnvConfig", "EstimatorConfig", "EvalConfig", "FaultToleranceConfig", "KLConfig", "LoggingConfig", "LoraConfig",
    "LossConfig", "LscConfig", "ModelConfig", "PamaConfig", "PlacementConfig", "PreflightConfig", "RayConfig",
    "ReferenceConfig", "RewardActorConfig", "RewardConfig", "RewardFunctionConfig", "RewardModelConfig",
    "RolloutConfig", "SamplingAlgoConfig", "TrainConfig", "UpdateConfig",
    "CONF_DIR", "check_combinations", "compose_config", "load_config", "micro_batch", "settings_that_cannot_act",
    "validate", "validate_correction", "validate_env", "validate_eval", "validate_mode",
]
