"""Demonstrations the built-in agent tasks write for themselves (`data.source=demonstrations`,
`data.task=rlhf.sft.demonstrations:<name>`): a function `(size, seed) -> rows` in TRL's `messages` format.

`calculator`: experiment=calculator's task (reasoning-gym's basic_arithmetic) solved as the run's episodes can solve
it: the question, a call of the calculator tool with the task's own expression, the tool's answer (what
`rlhf.agents.tools:calculator` returns for it), and the final number. Its warm start (`sft.data`) draws another seed
than the RL data, so no trained question is an RL or held-out one.

`guess_number`: experiment=guess_number's game (rlhf.agents.tasks:GuessNumber) played by bisection: the episode's
prompt (the env data's task, `PROMPT`, with reset's observation appended, as an episode renders it), then each guess
the middle of what is left, each answered by the environment's own reply, until the number is found: at most
`GuessNumber.most_guesses()` turns (7 for 1..100).
"""

import random

from rlhf.agents.tasks import GuessNumber
from rlhf.agents.tools import calculator as calculate

PROMPT = "Let's play."  # conf/data/env.yaml's task: the row's prompt, to which reset's observation is appended


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


def guess_number(size: int, seed: int) -> list[dict]:
    """`size` games, each number drawn from the game's range by `seed`; each row's `secret` beside its messages."""
    picks = random.Random(seed)
    rows = []
    for _ in range(size):
        secret = picks.randint(GuessNumber.LOW, GuessNumber.HIGH)
        game, state = GuessNumber(), random.getstate()
        messages = [{"role": "user", "content": PROMPT + game.reset()}]
        random.setstate(state)  # reset drew a number of its own from Python's random: left as it was
        game.secret = secret
        low, high = GuessNumber.LOW, GuessNumber.HIGH
        while True:
            guess = (low + high) // 2
            reply = game.respond(str(guess))
            messages.append({"role": "assistant", "content": str(guess)})
            if reply is None:  # found
                break
            messages.append({"role": "user", "content": reply})
            low, high = (guess + 1, high) if guess < secret else (low, guess - 1)
        rows.append({"secret": secret, "messages": messages})
    return rows
