"""Entry point: `python -m rlhf.train [overrides]` (add `-m` for a Hydra sweep)."""

import logging
import os

import hydra
from omegaconf import DictConfig

from rlhf.config import load_config


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    os.environ.setdefault("WANDB_SILENT", "true")
    from rlhf.driver import run

    config = load_config(cfg)
    metrics = run(config)
    logging.getLogger(__name__).info("finished: %s", {k: round(v, 4) for k, v in metrics.items() if "/" not in k})
    return metrics.get("reward", float("nan"))


if __name__ == "__main__":
    main()
