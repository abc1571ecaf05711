"""Tools in TRL's shape, run off the engine's thread: every failure is a message the model reads."""

import pytest
from transformers import AutoTokenizer

from rlhf.agents.tools import ToolCall, ToolRunner, calculator, tool_from_function
from tests_agent_helpers import add, explode, flood, hang, shout


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


def test_failures_raises_hangs_floods_and_bad_calls_become_messages(tiny_model):
    tools = {t.name: t for t in map(tool_from_function, (add, shout, explode, hang, flood))}
    runner = ToolRunner(timeout_s=0.5, max_response_tokens=16, tokenizer=AutoTokenizer.from_pretrained(tiny_model))
    calls = [ToolCall("add", '{"a": 2, "b": 3}'), ToolCall("shout", '{"text": "hi"}'),
             ToolCall("explode", '{"reason": "x"}'), ToolCall("hang", '{"seconds": 5}'),
             ToolCall("flood", '{"count": 1000}'), ToolCall("nope", "{}"), ToolCall("add", "{a: 2"),
             ToolCall("add", "[1, 2]"), ToolCall("add", '{"a": 1}')]
    results = runner.run([(tools, call) for call in calls])
    runner.close()
    assert [(r.content, r.error) for r in results[:2]] == [("5", False), ("HI", False)]
    assert results[2].error and results[2].content == "error: RuntimeError: boom: x"
    assert results[3].error and "did not answer within 0.5 s" in results[3].content
    assert not results[4].error and results[4].content.endswith("[cut at 16 tokens]") and len(results[4].content) < 200
    assert results[5].error and "no tool is named 'nope'" in results[5].content
    assert results[6].error and "are not JSON" in results[6].content
    assert results[7].error and "must be a JSON object" in results[7].content
    assert results[8].error and "TypeError" in results[8].content  # a missing argument
