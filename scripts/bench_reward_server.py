"""Load test of the reward server on localhost: concurrent clients, each sending batches of completions to score.

    python scripts/bench_reward_server.py                       # 16 clients x 50 requests x 32 completions, BLEU
    python scripts/bench_reward_server.py --url http://host:8000/score --clients 64

Without --url it starts scripts/reward_server.py (BLEU, the default reward) on a free port and stops it after.
Prints requests, failures, p50/p99 latency and requests per second. No request is retried: a failure counts.
"""

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf.rewards.remote import RewardServerError, post_json  # noqa: E402

WORDS = "the a cat dog sat ran on under mat box red blue quickly slowly because then so it was is".split()


def batch(size: int, seed: int) -> dict:
    rng = random.Random(seed)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))  # noqa: E731
    return {"prompts": [f"prompt {i}" for i in range(size)], "completions": [sentence() for _ in range(size)],
            "columns": {"references": [[sentence()] for _ in range(size)]}}


def load(url: str, clients: int, requests: int, size: int, timeout_s: float) -> dict:
    """Each client sends `requests` batches of `size` one after another; returns the latencies and failures."""
    latencies, failures, lock = [], [], threading.Lock()

    def client(index: int) -> None:
        payload = batch(size, index)
        for _ in range(requests):
            began = time.perf_counter()
            try:
                answer = post_json(url, payload, timeout_s, retries=0, backoff_s=0)
                if len(next(iter(answer["rewards"].values()))) != size:
                    raise RewardServerError(f"{len(answer['rewards'])} rewards for {size} completions")
            except Exception as err:  # a failed request of any kind is counted, not raised
                with lock:
                    failures.append(repr(err))
                continue
            with lock:
                latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "failures": failures, "seconds": time.perf_counter() - started}


def start_server(log_file) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # its log goes to a file: a pipe nobody reads fills up and blocks the server
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("reward_server.py")), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=log_file)
    url, deadline = f"http://127.0.0.1:{port}/score", time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log_file.seek(0)
            raise RuntimeError(f"the reward server exited: {log_file.read().decode(errors='replace')[-2000:]}")
        try:
            post_json(url, batch(1, 0), 5, retries=0, backoff_s=0)
            return server, url
        except RewardServerError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the reward server did not answer within 120 s")


def stop(server: subprocess.Popen) -> None:
    """Our own server: asked to stop (SIGTERM: a process started in the background ignores SIGINT), then killed
    if it has not within 10 s."""
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        print("the reward server did not stop on SIGTERM within 10 s; killed")
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server's /score (default: start one)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--batch", type=int, default=32, help="completions per request")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args()

    with tempfile.TemporaryFile() as server_log:
        server, url = (None, args.url) if args.url else start_server(server_log)
        try:
            result = load(url, args.clients, args.requests, args.batch, args.timeout_s)
        finally:
            if server is not None:
                stop(server)
    latencies = sorted(result["latencies"])
    total = args.clients * args.requests
    print(f"{args.clients} clients x {args.requests} requests x {args.batch} completions against {url}")
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(f"requests: {total}, failed: {len(result['failures'])}, p50 {statistics.median(latencies) * 1e3:.1f} ms, "
              f"p99 {p99 * 1e3:.1f} ms, {len(latencies) / result['seconds']:.1f} requests/s")
    else:
        print(f"requests: {total}, failed: {len(result['failures'])}")
    for failure in result["failures"][:5]:
        print("  failure:", failure)
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    main()
