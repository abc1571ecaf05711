"""scripts/bench_agents.py's work composes and its environment stands (the benchmark itself runs minutes: not here)."""

import sys

from conftest import REPO
from rlhf.agents.environment import EnvironmentSpec
from rlhf.config import compose_config, load_config

sys.path.insert(0, str(REPO / "scripts"))
import bench_agents  # noqa: E402


def test_the_benchmarks_episodes_are_goons_with_its_reply_and_the_agent_composes():
    cfg = load_config(compose_config(*bench_agents.episodes(2), "output_dir=/tmp/unused"))
    spec = EnvironmentSpec(None, cfg.env.factory, cfg.env.reply)  # GoOn.respond is the reply, not a tool
    assert spec.tool_names == [] and cfg.env.max_turns == 2
    agent = load_config(compose_config(*bench_agents.episodes(2, agent=True), "output_dir=/tmp/unused"))
    assert agent.env.agent == "rlhf.agents.tasks:go_on" and not agent.env.factory
