"""A split run over two Ray nodes on this machine: the engine on one, the learner on the other, weights through
Ray's object store (no shared folder), an engine killed mid-run; and where split_8gpu puts its actors on two nodes
of 4 (declared) GPUs."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.integration


def test_a_split_run_over_two_nodes_syncs_through_the_object_store_and_survives_an_engine(tiny_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, str(REPO / "tests" / "cluster" / "two_node_run.py"), tiny_model,
                             str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["nodes"]["rollout"] != out["nodes"]["policy rank 0"]  # two nodes, one each
    assert "weight sync: object_store (rollout.weight_sync=auto)" in out["routes"]
    assert out["sync_dir"] == []  # nothing went through the folder
    history = out["history"]
    assert out["killed"] and [h["step"] for h in history] == list(range(4))
    assert sum(h["step_retries"] for h in history) >= 1  # the step the engine died in was redone
    # every step's samples come from the learner's current weights: every push reached the other node
    assert all(h["logprob_gap"] < 1e-4 for h in history)
    # split_8gpu on two nodes of 4 GPUs: the engines fill one node, the learner ranks with the reference and critic
    # ranks beside them the other (SPREAD per role put 2 engines and 2 learner ranks on each)
    nodes = {role: set(where) for role, where in out["split_8gpu"].items()}
    assert len(nodes["rollout"]) == 1 and len(out["split_8gpu"]["rollout"]) == 4
    assert len(nodes["policy"]) == 1 and nodes["policy"] == nodes["reference"] == nodes["critic"]
    assert nodes["rollout"] != nodes["policy"]
