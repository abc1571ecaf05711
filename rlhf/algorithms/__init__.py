"""Pure RL math: advantages, policy losses, KL estimators, and the registries that name them.

Every module of this package is imported here, so a new algorithm's module registers itself by being added."""

import importlib
import pkgutil

from rlhf.algorithms.advantages import AdvantageInputs, gae, group_advantages, rloo_advantages
from rlhf.algorithms.losses import LossInputs, LossOutput, aggregate_loss, clipped_policy_loss, kl_estimate
from rlhf.algorithms.objective import policy_objective
from rlhf.algorithms.registry import ADVANTAGE_ESTIMATORS, BATCH_TRANSFORMS, POLICY_LOSSES

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from rlhf.algorithms.cispo import cispo_loss  # noqa: E402
from rlhf.algorithms.corrections import rollout_correction  # noqa: E402
from rlhf.algorithms.gspo import gspo_loss  # noqa: E402

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AdvantageInputs",
    "BATCH_TRANSFORMS",
    "POLICY_LOSSES",
    "LossInputs",
    "LossOutput",
    "aggregate_loss",
    "cispo_loss",
    "clipped_policy_loss",
    "gae",
    "group_advantages",
    "gspo_loss",
    "kl_estimate",
    "policy_objective",
    "rloo_advantages",
    "rollout_correction",
]
