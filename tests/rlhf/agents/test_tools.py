"""Tools in TRL's shape, run off the engine's thread: every failure is a message the model reads, formatted as TRL
formats it; an episode's calls in order, episodes side by side, async tools on one event loop."""

import time

import pytest
from transformers import AutoTokenizer

from rlhf.agents.environment import EnvironmentSpec
from rlhf.agents.tools import ToolCall, ToolRunner, calculator, tool_from_function
from tests_agent_helpers import add, explode, finish, flood, hang, shout


def runner(tiny_model, timeout_s=0.5, max_tokens=16, workers=8, truncate="middle"):
    return ToolRunner(timeout_s, max_tokens, AutoTokenizer.from_pretrained(tiny_model), workers, truncate)


def tools_of(*fns):
    return {t.name: t for t in map(tool_from_function, fns)}


def test_the_calculator_computes_and_runs_nothing_but_arithmetic():
    assert calculator("(3 + 4) * 12") == "84" and calculator("7 / 2") == "3.5" and calculator("-2 ** 3") == "-8"
    for evil in ("__import__('os').system('true')", "open('/etc/passwd')", "[1] * 10", "x + 1"):
        with pytest.raises(ValueError, match="only numbers"):
            calculator(evil)
    with pytest.raises(ValueError, match="exponents above 64"):
        calculator("2 ** 100000")


def test_a_tools_schema_comes_from_its_hints_and_docstring():
    tool = tool_from_function(add)
    assert tool.name == "add" and tool.schema["function"]["parameters"]["required"] == ["a", "b"]
    assert tool.schema["function"]["parameters"]["properties"]["a"] == {"type": "integer",
                                                                       "description": "The first integer."}

    def undocumented(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="cannot be described to the model"):
        tool_from_function(undocumented)


def test_failures_raises_hangs_floods_and_bad_calls_become_messages_formatted_as_trls(tiny_model):
    tools = tools_of(add, shout, explode, hang, flood)
    run = runner(tiny_model)
    calls = [ToolCall("add", '{"a": 2, "b": 3}', "c0"), ToolCall("shout", '{"text": "hi"}'),
             ToolCall("explode", '{"reason": "x"}'), ToolCall("hang", '{"seconds": 2}'),
             ToolCall("flood", '{"count": 1000}'), ToolCall("nope", "{}"), ToolCall("add", "{a: 2"),
             ToolCall("add", "[1, 2]"), ToolCall("add", '{"a": 1}')]
    results = [r for [r] in run.run([(tools, [call]) for call in calls])]  # one call per episode: side by side
    run.close()
    assert [(r.content, r.error, r.call_id) for r in results[:2]] == [("5", False, "c0"), ("HI", False, "")]
    assert results[2].error and results[2].content == "{'error': 'RuntimeError: boom: x'}"  # str({"error": ...})
    assert results[3].error and results[3].timed_out and "did not answer within 0.5 s" in results[3].content
    assert not results[4].error and results[4].cut and "tokens cut]" in results[4].content
    assert len(results[4].content) < 200
    assert results[5].error and "no tool is named 'nope'" in results[5].content
    assert results[6].error and "are not JSON" in results[6].content
    assert results[7].error and "must be a JSON object" in results[7].content
    assert results[8].error and "TypeError" in results[8].content  # a missing argument


def test_a_non_string_result_is_its_str_and_content_blocks_pass_through(tiny_model):
    def table(n: int) -> dict:
        """A table.

        Args:
            n: Its size.
        """
        return {"rows": n}

    def blocks(n: int) -> list:
        """Content blocks.

        Args:
            n: How many.
        """
        return [{"type": "text", "text": "x"}] * n

    run = runner(tiny_model)
    [[as_str], [as_blocks]] = run.run([(tools_of(table), [ToolCall("table", '{"n": 2}')]),
                                        (tools_of(blocks), [ToolCall("blocks", '{"n": 2}')])])
    run.close()
    assert as_str.content == "{'rows': 2}" and as_blocks.content == [{"type": "text", "text": "x"}] * 2


@pytest.mark.parametrize("side, kept", [("head", ("a0 ", None)), ("tail", (None, " a399")),
                                        ("middle", ("a0 ", " a399"))])
def test_a_long_answer_is_cut_on_the_configured_side_and_counted(tiny_model, side, kept):
    def words() -> str:
        """Many words."""
        return " ".join(f"a{i}" for i in range(400))

    run = runner(tiny_model, max_tokens=20, truncate=side)
    [[result]] = run.run([(tools_of(words), [ToolCall("words", "{}")])])
    run.close()
    head, tail = kept
    assert result.cut and "tokens cut]" in result.content
    assert (head is None) or result.content.startswith(head.strip())
    assert (tail is None) or result.content.endswith(tail)
    assert not result.content.startswith("a0") if head is None else True
    assert not result.content.endswith("a399") if tail is None else True


def test_a_turns_calls_run_in_order_on_their_instance_and_async_ones_on_one_loop(tiny_model):
    spec = EnvironmentSpec(None, "tests_agent_helpers:Ledger", None)
    env = spec.new()
    env.reset({})
    run = runner(tiny_model, timeout_s=5)
    [results] = run.run([(env.tools, [ToolCall("write", '{"entry": "first"}'), ToolCall("write", '{"entry": "second"}'),
                                      ToolCall("stamp", "{}"), ToolCall("read", "{}")])])
    assert [r.content for r in results] == ["1 entries", "2 entries", "stamped", "first,second"]
    [[again]] = run.run([(env.tools, [ToolCall("stamp", "{}")])])  # a later turn: the same event loop
    run.close()
    assert again.content == "stamped" and not again.error


def test_hung_calls_hold_their_workers_but_never_starve_another_episodes_call(tiny_model):
    run = runner(tiny_model, timeout_s=0.5, workers=3)
    tools = tools_of(hang, add)
    started = time.monotonic()
    [[first], [second], [summed]] = run.run([(tools, [ToolCall("hang", '{"seconds": 3}')]),
                                              (tools, [ToolCall("hang", '{"seconds": 3}')]),
                                              (tools, [ToolCall("add", '{"a": 2, "b": 3}')])])
    assert first.timed_out and second.timed_out and summed.content == "5"
    assert time.monotonic() - started < 1.5  # the two timeouts were waited side by side
    assert run.hung == 2
    [[later]] = run.run([(tools, [ToolCall("add", '{"a": 1, "b": 1}')])])  # one worker is left: it runs
    assert later.content == "2"
    [[stuck]] = run.run([(tools, [ToolCall("hang", '{"seconds": 3}')])])  # now every worker is held...
    [[refused]] = run.run([(tools, [ToolCall("add", '{"a": 1, "b": 1}')])])
    assert stuck.timed_out and refused.error and "every one of the env.tool_workers=3" in refused.content
    time.sleep(3)  # ...until the hung calls come back and give their workers back
    [[back]] = run.run([(tools, [ToolCall("add", '{"a": 1, "b": 1}')])])
    run.close()
    assert back.content == "2" and run.hung == 0


def test_a_tool_can_end_its_episode_and_later_calls_do_not_run(tiny_model):
    run = runner(tiny_model)
    [results] = run.run([(tools_of(finish, explode), [ToolCall("finish", '{"summary": "done"}'),
                                                      ToolCall("explode", '{"reason": "x"}')])])
    run.close()
    assert len(results) == 1 and results[0].ends_episode and results[0].content == "finished: done"
