"""TRL's environment contract, unchanged: any factory, reset(**row) with the data's own columns, public methods as
tools, get_reward a reward by itself; a dict of factories routed by the rows' `environment`."""

import functools

import pytest

from rlhf.agents.environment import EnvironmentFailure, Environments, EnvironmentSpec, tools_of
from rlhf.config import compose_config, load_config


def test_a_trl_environment_class_runs_unchanged():
    spec = EnvironmentSpec(None, "tests_agent_helpers:Counter", reply=None)
    assert spec.tool_names == ["increment"] and spec.has_reward  # _private is no tool
    assert spec.schemas[0]["function"]["parameters"]["properties"]["step"]["type"] == "integer"
    first, second = spec.new(), spec.new()  # one instance per episode (the probe serves the first)
    assert first.instance is not second.instance
    assert first.reset({"prompt": "p", "target": 5}) == " Reach 5." and second.reset({"prompt": "p"}) == " Reach 3."
    assert first.tools["increment"].fn(step=5) == "the counter is 5"
    assert first.reward() == (1.0, None) and second.reward() == (0.0, None)
    assert first.respond("done") is None  # no env.reply: a turn without a tool call ends the episode


def test_any_callable_that_returns_an_instance_is_a_factory(monkeypatch):
    import tests_agent_helpers

    monkeypatch.setattr(tests_agent_helpers, "shop_of_3", functools.partial(tests_agent_helpers.Shop, stock=3),
                        raising=False)
    by_function = EnvironmentSpec(None, "tests_agent_helpers:make_counter", None)
    assert by_function.class_name == "Counter" and by_function.tool_names == ["increment"]
    by_partial = EnvironmentSpec(None, "tests_agent_helpers:shop_of_3", None)
    shop = by_partial.new()
    assert by_partial.class_name == "Shop" and shop.instance.stock == 3 and by_partial.tool_names == ["buy"]


def test_an_environment_that_cannot_serve_is_named_in_one_line():
    with pytest.raises(ValueError, match="cannot be imported"):
        EnvironmentSpec(None, "tests_agent_helpers:Missing", None)
    with pytest.raises(EnvironmentFailure, match=r"calling it with no argument .* raised TypeError: .*missing 1 "
                                                 r"required positional argument: 'secret'"):
        EnvironmentSpec(None, "tests_agent_helpers:NeedsArgument", None)
    with pytest.raises(EnvironmentFailure, match="has no reset"):
        EnvironmentSpec(None, "builtins:dict", None)  # a factory of something without reset
    broken = EnvironmentSpec(None, "tests_agent_helpers:BrokenReset", None).new()
    with pytest.raises(EnvironmentFailure, match=r"^BrokenReset.reset raised KeyError: 'target' \(it is called with "
                                                 r"the row's columns \['prompt'\]\)$"):
        broken.reset({"prompt": "p"})
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        tools_of(["tests_agent_helpers:add", "tests_agent_helpers:add"])
    assert list(tools_of(["rlhf.agents.tools:calculator", "tests_agent_helpers:shout"])) == ["calculator", "shout"]


def test_a_raising_get_reward_leaves_its_episode_unscorable_with_the_reason():
    env = EnvironmentSpec(None, "tests_agent_helpers:BrokenReward", None).new()
    env.reset({})
    assert env.reward() == (None, "BrokenReward.get_reward raised RuntimeError: the judge is down")


def test_a_method_named_respond_is_a_tool_as_in_trl_unless_env_reply_names_it():
    as_tool = EnvironmentSpec(None, "tests_agent_helpers:Talker", reply=None)
    assert as_tool.tool_names == ["respond"]
    env = as_tool.new()
    env.reset({})
    assert env.respond("hi") is None and env.instance.heard == []  # not called as a reply hook
    as_hook = EnvironmentSpec(None, "tests_agent_helpers:Talker", reply="respond")
    assert as_hook.tool_names == []
    env = as_hook.new()
    env.reset({})
    assert env.respond("hi") == "ok" and env.instance.heard == ["hi"]
    with pytest.raises(EnvironmentFailure, match="env.reply='answer': Talker has no method of that name"):
        EnvironmentSpec(None, "tests_agent_helpers:Talker", reply="answer")


def test_get_reward_is_a_reward_by_itself_weight_one_under_the_class_name():
    cfg = load_config(compose_config("env.factory=tests_agent_helpers:Counter", "output_dir=/tmp/unused"))
    bleu = [f for f in cfg.reward.functions if f.name == "bleu"]
    assert [(f.name, f.label, f.weight) for f in cfg.reward.functions] == [
        *[(f.name, f.label, f.weight) for f in bleu], ("env", "Counter", 1.0)]
    assert cfg.reward.objective_labels()[-1] == "Counter"


def test_listing_env_keeps_its_weight_and_never_counts_it_twice():
    cfg = load_config(compose_config("env.factory=tests_agent_helpers:Counter", "reward=base",
                                     "reward.functions=[{name: env, weight: 2.0}]", "output_dir=/tmp/unused"))
    assert [(f.name, f.weight) for f in cfg.reward.functions] == [("env", 2.0)]
    cfg = load_config(compose_config("env.factory=tests_agent_helpers:Talker", "output_dir=/tmp/unused"))
    assert all(f.name != "env" for f in cfg.reward.functions)  # no get_reward: nothing added


def test_a_dict_of_factories_routes_each_row_to_its_environment():
    envs = Environments({"count": "tests_agent_helpers:Counter", "shop": "tests_agent_helpers:make_counter"}, None)
    assert envs.multi and envs.reward_label == "Counter"
    assert envs.spec_for({"environment": "shop"}).path == "tests_agent_helpers:make_counter"
    assert envs.reset_arguments({"environment": "shop", "target": 2}) == {"target": 2}  # not passed to reset
    with pytest.raises(EnvironmentFailure, match=r"environment='bank' is not among env.factory's \['count', 'shop'\]"):
        envs.spec_for({"environment": "bank"})
    single = Environments("tests_agent_helpers:Counter", None)
    assert single.reset_arguments({"environment": "x"}) == {"environment": "x"}  # a column like any other


class Replies:
    def reset(self, **row):
        return None

    def respond(self, text):  # the model's text in, the environment's answer out: a reply, not a tool
        return "Go on."


def test_an_undescribable_method_is_refused_naming_env_reply_and_taken_as_the_reply(monkeypatch):
    import tests_agent_helpers

    monkeypatch.setattr(tests_agent_helpers, "Replies", Replies, raising=False)
    with pytest.raises(EnvironmentFailure, match=r"the tool Replies.respond: .* the reply: env.reply=respond\)"):
        EnvironmentSpec(None, "tests_agent_helpers:Replies", None)
    assert EnvironmentSpec(None, "tests_agent_helpers:Replies", "respond").tool_names == []
