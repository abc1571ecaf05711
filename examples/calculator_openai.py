"""The calculator task written as an agent against the OpenAI client, the way any agent framework's code is: a hand
loop of `chat.completions.create` with one tool. `python -m rlhf.train experiment=calculator_openai` trains it
unchanged: the run hands `run` a client pointed at its own endpoint (rlhf/agents/openai_agents.py).

To point an existing agent at the run, give it the client (or its base_url and api_key) and return the episode's
reward; nothing else of it changes."""

import json

from rlhf.agents.tools import calculator
from rlhf.rewards.functions import last_number

SYSTEM = "Solve the problem. You may use the calculator tool. End with the final number."
TOOLS = [{"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression: numbers, + - * / // % ** and parentheses.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "description":
                                                                   "The expression, e.g. (3 + 4) * 12"}},
                   "required": ["expression"]}}}]


async def run(client, row) -> float:
    """One episode: the model answers, calling the calculator as often as it likes (3 turns at most); reward 1 if
    its last answer ends with the right number."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row["question"]}]
    for _ in range(3):
        response = await client.chat.completions.create(model="policy", messages=messages, tools=TOOLS)
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            try:
                answer = calculator(**json.loads(call.function.arguments))
            except Exception as err:  # noqa: BLE001 - the model reads what went wrong
                answer = f"error: {err}"
            messages.append({"role": "tool", "tool_call_id": call.id, "content": answer})
    final = messages[-1].get("content") if messages[-1]["role"] == "assistant" else None
    got, expected = last_number(final or ""), last_number(str(row["answer"]))
    return float(got is not None and expected is not None and abs(got - expected) < 1e-6)


def demonstrations(size: int, seed: int) -> list[dict]:
    """The warm start's conversations (experiment=calculator_openai's sft.data), held as this agent holds them: its
    system prompt and tool schema, the task's question, a calculator call with the task's expression, the tool's
    answer, the final number (rlhf.sft.demonstrations:calculator's games). Rendered as the run's endpoint renders the
    agent's calls, so the warm start trains the tokens the agent's episodes sample."""
    from rlhf.sft.demonstrations import calculator as games

    return [{**row, "messages": [{"role": "system", "content": SYSTEM}, *row["messages"]], "tools": TOOLS}
            for row in games(size=size, seed=seed)]
