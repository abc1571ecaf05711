"""Serve reward functions over HTTP for `rlhf.rewards.remote` (run by `scripts/reward_server.py`)."""

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rlhf.rewards.scoring import RewardFunctionError, RewardScorer

log = logging.getLogger(__name__)


def make_server(scorer: RewardScorer, host: str, port: int) -> ThreadingHTTPServer:
    """POST /score {"prompts", "completions", "columns"} -> {"rewards": {objective: [float | None]}}.
    A malformed request gets 400; a reward function that fails gets 500 with its message."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the http.server API)
            if self.path.rstrip("/") != "/score":
                return self._answer(404, {"error": f"unknown path {self.path}; POST to /score"})
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                prompts, completions = request["prompts"], request["completions"]
                columns = request.get("columns") or {}
            except (ValueError, KeyError, TypeError) as err:
                return self._answer(400, {"error": f"malformed request: {err!r}"})
            try:
                rewards = scorer.score(prompts, completions, columns)
            except (RewardFunctionError, ValueError) as err:
                return self._answer(500, {"error": str(err)})
            # NaN is not JSON: unscorable samples travel as null
            self._answer(200, {"rewards": {k: [None if v != v else v for v in vs] for k, vs in rewards.items()}})

        def _answer(self, status: int, payload: dict):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            log.debug(fmt, *args)

    return ThreadingHTTPServer((host, port), Handler)
