"""Serve the configured reward functions over HTTP, for `{name: remote, kwargs: {url: ...}}` in a run.

    python scripts/reward_server.py --port 8000                      # the default reward (BLEU)
    python scripts/reward_server.py --port 8000 -- reward=bleu 'reward.functions.0.kwargs={}'
    RLHF_REWARD_TOKEN=... python scripts/reward_server.py --host 0.0.0.0   # beyond localhost: a token is required

Overrides after `--` are Hydra overrides of the project config; only its `reward` section is used. Runs send the
token from RLHF_REWARD_TOKEN in their reward actor's environment (e.g. `ray job submit --runtime-env-json
'{"env_vars": {"RLHF_REWARD_TOKEN": "..."}}'`).
"""

import argparse
import logging
import os
import signal
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
    parser.add_argument("--token", default=os.environ.get("RLHF_REWARD_TOKEN"),
                        help="shared token clients must send (default: $RLHF_REWARD_TOKEN); required beyond localhost")
    parser.add_argument("--max-request-mb", type=float, default=16.0, help="larger requests get 413, unread")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after --)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    cfg = load_config(compose_config("output_dir=/tmp/reward-server", *args.overrides))
    scorer = RewardScorer([vars(f) for f in cfg.reward.functions], cfg.reward.timeout_s)
    try:
        server = make_server(scorer, args.host, args.port, args.token, args.max_request_mb)
    except ValueError as err:
        parser.error(str(err))
    logging.info("serving %s on http://%s:%d/score", scorer.labels, args.host, server.server_port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # close the socket on SIGTERM too, as on Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
