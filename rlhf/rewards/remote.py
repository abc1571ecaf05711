"""A reward computed by another process over HTTP (`scripts/reward_server.py` serves any configured reward).

Request: POST {url} with JSON {"prompts", "completions", "columns"}; response {"rewards": {objective: [...]}}.
"""

import json
import logging
import os
import time
import urllib.error
import urllib.request

from rlhf.rewards.functions import REWARD_FUNCTIONS

log = logging.getLogger(__name__)


class RewardServerError(RuntimeError):
    pass


def post_json(url: str, payload: dict, timeout_s: float, retries: int, backoff_s: float,
              token: str | None = None) -> dict:
    """POST with a timeout per attempt and `retries` more attempts (exponential backoff) on connection errors,
    timeouts and 5xx answers; a 4xx answer is the request's fault and is not retried. `token`: the server's
    shared token, sent as "Authorization: Bearer <token>"."""
    body = json.dumps(payload, default=str).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    last_error = None
    for attempt in range(retries + 1):
        request = urllib.request.Request(url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            if err.code < 500:
                raise RewardServerError(f"reward server {url} refused the request: HTTP {err.code}: {detail}") from err
            last_error = f"HTTP {err.code}: {detail}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            last_error = repr(getattr(err, "reason", err))
        if attempt < retries:
            log.warning("reward server %s: attempt %d failed (%s); retrying", url, attempt + 1, last_error)
            time.sleep(backoff_s * 2**attempt)
    raise RewardServerError(f"reward server {url} unreachable after {retries + 1} attempts (last error: {last_error}); "
                            "is it running? start one with scripts/reward_server.py")


@REWARD_FUNCTIONS.register("remote")
def remote(prompts, completions, url: str = "http://127.0.0.1:8000/score", objective: str | None = None,
           timeout_s: float = 30.0, retries: int = 2, backoff_s: float = 0.5, **columns) -> list[float | None]:
    """One objective served by a reward server. `objective` names it when the server serves several. The
    server's token, if it has one, comes from RLHF_REWARD_TOKEN in the reward actor's environment (never from
    the config, which is logged)."""
    answer = post_json(url, {"prompts": prompts, "completions": completions, "columns": columns},
                       timeout_s, retries, backoff_s, os.environ.get("RLHF_REWARD_TOKEN"))
    rewards = answer.get("rewards")
    if not isinstance(rewards, dict) or not rewards:
        raise RewardServerError(f"reward server {url} answered without a 'rewards' table: {str(answer)[:300]}")
    if objective is None:
        if len(rewards) > 1:
            raise RewardServerError(f"reward server {url} serves {sorted(rewards)}: choose one with kwargs.objective")
        return next(iter(rewards.values()))
    if objective not in rewards:
        raise RewardServerError(f"reward server {url} has no objective {objective!r}; it serves {sorted(rewards)}")
    return rewards[objective]
