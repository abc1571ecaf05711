import threading

import pytest

from rlhf.rewards import REWARD_FUNCTIONS, RewardScorer
from rlhf.rewards.remote import RewardServerError, remote
from rlhf.rewards.server import make_server


def call(name, completions, **columns):
    return REWARD_FUNCTIONS.get(name)(prompts=["p"] * len(completions), completions=completions, **columns)


def test_exact_and_numeric_match():
    assert call("exact_match", ["42", " <answer>42</answer>", "41"], answer=["42"] * 3) == [1.0, 1.0, 0.0]
    got = call("numeric_match", ["so 1,200 in total", "about 1200.0", "12", "no idea"], answer=["1200"] * 4)
    assert got == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="'answer' column"):
        call("exact_match", ["1"])


def test_reasoning_gym_uses_the_tasks_own_verifier():
    import reasoning_gym

    entry = reasoning_gym.create_dataset("gsm_symbolic", size=1, seed=0)[0]
    got = call("reasoning_gym", [f"The answer is {entry['answer']}", "The answer is -1"],
               rg_task=["gsm_symbolic"] * 2, rg_entry=[entry] * 2)
    assert got[0] == 1.0 and got[1] < 1.0


def test_format_length_and_conciseness():
    assert call("format", ["<think>hm</think> <answer>4</answer>", "4"]) == [1.0, 0.0]
    assert call("format", ["ANSWER: 4"], pattern=r"ANSWER: \d+") == [1.0]
    assert call("length", ["a b c d", "a"], scale=2.0, high=1.5) == [1.5, 0.5]
    assert call("conciseness", ["", "a b", "a b c d e"], max_words=4) == [1.0, 0.5, 0.0]


def test_similarity_ranks_a_paraphrase_above_an_unrelated_answer():
    refs = [["The cat is sleeping on the sofa."]] * 3
    paraphrase, unrelated, empty = call("similarity", ["A cat sleeps on the couch.", "Stock prices fell sharply.", ""],
                                        references=refs)
    assert paraphrase > 0.7 and unrelated < 0.3 and empty == 0.0


@pytest.fixture
def reward_server():
    server = make_server(RewardScorer([{"name": "bleu", "weight": 1.0}, {"name": "conciseness", "weight": 1.0}], 10.0),
                         "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/score"
    server.shutdown()
    server.server_close()


def test_a_remote_reward_equals_the_local_one(reward_server):
    completions, refs = ["the cat sat on the mat", ""], [["the cat is on the mat"]] * 2
    got = remote(["p", "p"], completions, url=reward_server, objective="bleu", references=refs)
    assert got == pytest.approx(call("bleu", completions, references=refs))
    with pytest.raises(RewardServerError, match="serves \\['bleu', 'conciseness'\\]"):
        remote(["p"], ["x"], url=reward_server, references=[["x"]])
    with pytest.raises(RewardServerError, match=r"HTTP 500.*references"):
        remote(["p"], ["x"], url=reward_server, objective="bleu")  # no references column: the server says why


def test_a_server_that_is_down_is_named_after_the_retries():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(RewardServerError, match=rf"127.0.0.1:{port}/score unreachable after 3 attempts"):
        remote(["p"], ["x"], url=f"http://127.0.0.1:{port}/score", retries=2, backoff_s=0.01, timeout_s=1)
