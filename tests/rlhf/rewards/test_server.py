"""The reward server's refusals: size, token, shapes; each answered before any reward function runs."""

import http.client
import json
import threading

import pytest

from rlhf.rewards import RewardScorer
from rlhf.rewards.remote import RewardServerError, remote
from rlhf.rewards.server import make_server


@pytest.fixture
def serve():
    servers = []

    def start(**options):
        server = make_server(RewardScorer([{"name": "bleu"}], 10.0), "127.0.0.1", 0, **options)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def post(port, body: bytes, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", "/score", body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    answer = response.status, json.loads(response.read())["error"] if response.status != 200 else None
    connection.close()
    return answer


def test_a_request_over_the_limit_gets_413_without_being_read(serve):
    port = serve(max_request_mb=0.001)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest("POST", "/score")
    connection.putheader("Content-Length", str(2**30))  # announced, never sent: the answer cannot wait for it
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "1073741824 bytes, over this server's limit of 1048" in response.read().decode()
    connection.close()


@pytest.mark.parametrize("body, field", [
    (b"{not json", "the body is not JSON"),
    (b'["a"]', "a JSON list, not an object"),
    (b'{"prompts": "p", "completions": ["a"]}', "field 'prompts' must be a list"),
    (b'{"prompts": ["p"]}', "field 'completions' must be a list, got NoneType"),
    (b'{"prompts": ["p"], "completions": [1]}', "field 'completions' must be a list of strings"),
    (b'{"prompts": ["p", "q"], "completions": ["a"]}', "field 'prompts' has 2 entries for 1 completions"),
    (b'{"prompts": ["p"], "completions": ["a"], "columns": {"references": []}}', "field 'columns.references' must be"),
])
def test_bad_json_or_shapes_get_400_naming_the_field(serve, body, field):
    status, error = post(serve(), body)
    assert status == 400 and field in error


def test_a_token_is_required_beyond_localhost_and_checked(serve, monkeypatch):
    with pytest.raises(ValueError, match="beyond localhost: give it a shared token"):
        make_server(RewardScorer([{"name": "bleu"}], 10.0), "0.0.0.0", 0)
    port = serve(token="s3cret")
    request = json.dumps({"prompts": ["p"], "completions": ["a b"], "columns": {"references": [["a b"]]}}).encode()
    assert post(port, request)[0] == 401
    assert post(port, request, {"Authorization": "Bearer wrong"})[0] == 401
    url = f"http://127.0.0.1:{port}/score"
    with pytest.raises(RewardServerError, match="HTTP 401"):
        remote(["p"], ["a b"], url=url, references=[["a b"]])
    monkeypatch.setenv("RLHF_REWARD_TOKEN", "s3cret")  # where the reward actor finds it
    assert remote(["p"], ["a b"], url=url, references=[["a b"]]) == [pytest.approx(1.0)]
