"""TRL's environment contract, unchanged: reset(**row), public methods as tools, get_reward."""

import pytest

from rlhf.agents.environment import EnvironmentClass, tools_of


def test_a_trl_environment_class_runs_unchanged():
    cls = EnvironmentClass("tests_agent_helpers:Counter")
    assert cls.tool_names == ["increment"] and cls.has_reward and not cls.responds  # _private is no tool
    assert cls.schemas[0]["function"]["parameters"]["properties"]["step"]["type"] == "integer"
    first, second = cls.new(), cls.new()  # one instance per episode
    assert first.reset({"prompt": "p", "target": 5}) == " Reach 5." and second.reset({"prompt": "p"}) == " Reach 3."
    assert first.tools["increment"].fn(step=5) == "the counter is 5"
    assert first.reward() == 1.0 and second.reward() == 0.0
    assert first.respond("done") is None  # no respond(): a turn without a tool call ends the episode


def test_classes_and_tools_that_cannot_serve_are_refused_by_name():
    with pytest.raises(ValueError, match="cannot be imported"):
        EnvironmentClass("tests_agent_helpers:Missing")
    with pytest.raises(ValueError, match="is not a class"):
        EnvironmentClass("tests_agent_helpers:add")
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        tools_of(["tests_agent_helpers:add", "tests_agent_helpers:add"])
    assert list(tools_of(["rlhf.agents.tools:calculator", "tests_agent_helpers:shout"])) == ["calculator", "shout"]
