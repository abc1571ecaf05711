"""Serve the configured reward functions over HTTP, for `{name: remote, kwargs: {url: ...}}` in a run.

    python scripts/reward_server.py --port 8000                      # the default reward (BLEU)
    python scripts/reward_server.py --port 8000 -- reward=bleu 'reward.functions.0.kwargs={}'

Overrides after `--` are Hydra overrides of the project config; only its `reward` section is used.
"""

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.config import compose_config, load_config  # noqa: E402
from rlhf.rewards import RewardScorer  # noqa: E402
from rlhf.rewards.server import make_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    cfg = load_config(compose_config("output_dir=/tmp/reward-server", *args.overrides))
    scorer = RewardScorer([vars(f) for f in cfg.reward.functions], cfg.reward.timeout_s)
    server = make_server(scorer, args.host, args.port)
    logging.info("serving %s on http://%s:%d/score", scorer.labels, args.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
