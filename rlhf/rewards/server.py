"""Serve reward functions over HTTP for `rlhf.rewards.remote` (run by `scripts/reward_server.py`)."""

import hmac
import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rlhf.rewards.scoring import RewardFunctionError, RewardScorer

log = logging.getLogger(__name__)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_HEADER = "Authorization"  # "Bearer <token>"


class BadRequest(ValueError):
    """A request whose JSON or shapes are wrong; the message names the field."""


def parse_request(body: bytes) -> tuple[list, list[str], dict[str, list]]:
    """prompts, completions and columns of a /score request, each checked (one entry per completion)."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadRequest(f"the body is not JSON: {err}") from None
    if not isinstance(request, dict):
        raise BadRequest(f"the body is a JSON {type(request).__name__}, not an object with prompts and completions")
    for field in ("prompts", "completions"):
        if not isinstance(request.get(field), list):
            raise BadRequest(f"field {field!r} must be a list, got {type(request.get(field)).__name__}")
    prompts, completions, columns = request["prompts"], request["completions"], request.get("columns") or {}
    if not all(isinstance(c, str) for c in completions):
        raise BadRequest("field 'completions' must be a list of strings")
    if len(prompts) != len(completions):
        raise BadRequest(f"field 'prompts' has {len(prompts)} entries for {len(completions)} completions")
    if not isinstance(columns, dict):
        raise BadRequest(f"field 'columns' must be an object of lists, got {type(columns).__name__}")
    for name, values in columns.items():
        if not isinstance(values, list) or len(values) != len(completions):
            raise BadRequest(f"field 'columns.{name}' must be a list of {len(completions)} entries (one per completion)")
    return prompts, completions, columns


def make_server(scorer: RewardScorer, host: str, port: int, token: str | None = None,
                max_request_mb: float = 16.0) -> ThreadingHTTPServer:
    """POST /score {"prompts", "completions", "columns"} -> {"rewards": {objective: [float | None]}}.

    A request over `max_request_mb` gets 413 unread; without the shared `token` (header "Authorization: Bearer
    <token>") 401; malformed JSON or wrong shapes 400 naming the field; a reward function that fails 500 with its
    message. Binding beyond localhost needs a token: anyone who reaches the port could otherwise run the rewards."""
    if host not in LOCAL_HOSTS and not token:
        raise ValueError(f"the reward server binds {host!r}, beyond localhost: give it a shared token (--token or "
                         "RLHF_REWARD_TOKEN), which the runs' `remote` reward sends")
    limit = int(max_request_mb * 1024**2)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the http.server API)
            if self.path.rstrip("/") != "/score":
                return self._answer(404, {"error": f"unknown path {self.path}; POST to /score"})
            if token and not hmac.compare_digest(self.headers.get(TOKEN_HEADER, ""), f"Bearer {token}"):
                return self._answer(401, {"error": "missing or wrong token (header 'Authorization: Bearer <token>')"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._answer(411, {"error": "a request needs a Content-Length header"})
            if length > limit:
                self.close_connection = True  # the body is never read
                return self._answer(413, {"error": f"the request has {length} bytes, over this server's limit of "
                                                   f"{limit} (--max-request-mb); send smaller batches"})
            try:
                prompts, completions, columns = parse_request(self.rfile.read(length))
            except BadRequest as err:
                return self._answer(400, {"error": f"malformed request: {err}"})
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

    class Server(ThreadingHTTPServer):
        # http.server's backlog of 5 makes connections past it wait for a SYN retry: with 16 clients at once the
        # p99 latency was 1.2 s against 0.18 s (scripts/bench_reward_server.py, its server logging to a pipe)
        request_queue_size = 128
        daemon_threads = True

    return Server((host, port), Handler)
