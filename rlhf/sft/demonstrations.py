"""Demonstrations the built-in agent tasks write for themselves (`data.source=demonstrations`,
`data.task=rlhf.sft.demonstrations:<name>`): a function `(size, seed) -> rows` in TRL's `messages` format.

`calculator`: experiment=calculator's task (reasoning-gym's basic_arithmetic) solved as the run's episodes can solve
it: the question, a call of the calculator tool with the task's own expression, the tool's answer (what
`rlhf.agents.tools:calculator` returns for it), and the final number. Its warm start (`sft.data`) draws another seed
than the RL data, so no trained question is an RL or held-out one.
"""

from rlhf.agents.tools import calculator as calculate


def calculator(size: int, seed: int) -> list[dict]:
    import reasoning_gym

    rows = []
    for item in reasoning_gym.create_dataset("basic_arithmetic", size=size, seed=seed):
        expression = item["metadata"]["expression"]
        call = {"id": "call_0", "type": "function",
                "function": {"name": "calculator", "arguments": {"expression": expression}}}
        rows.append({"answer": str(item["answer"]), "messages": [
            {"role": "user", "content": item["question"]},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "name": "calculator", "content": calculate(expression), "tool_call_id": "call_0"},
            {"role": "assistant", "content": f"The answer is {item['answer']}."}]})
    return rows
