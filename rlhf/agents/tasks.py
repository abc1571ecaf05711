"""Built-in environments in TRL's shape (rlhf/agents/environment.py), for `experiment=guess_number` and the tests.
The calculator task needs no class of its own: reasoning-gym's arithmetic rows, the `calculator` tool
(rlhf/agents/tools.py) and the `numeric_match` reward (`experiment=calculator`)."""

import random
import re

_INTEGER = re.compile(r"-?\d+")


class GuessNumber:
    """The environment thinks of a number from 1 to 100 and answers each guess with "higher" or "lower": a multi-turn
    task without tools, where the environment answers the model (`respond`). Reward: 1 for finding it, less 0.1 for
    each guess after the first; 0 if the turns run out."""

    LOW, HIGH = 1, 100

    def reset(self, **row) -> str:
        self.secret = random.randint(self.LOW, self.HIGH)  # random is seeded per group: a group plays one number
        self.guesses, self.solved = 0, False
        return (f" I am thinking of a whole number from {self.LOW} to {self.HIGH}. Guess it: answer with one number, "
                "and I will tell you whether mine is higher or lower.")

    def respond(self, text: str) -> str | None:
        numbers = _INTEGER.findall(text)
        if not numbers:
            return f"Answer with one whole number from {self.LOW} to {self.HIGH}."
        guess = int(numbers[-1])
        self.guesses += 1
        if guess == self.secret:
            self.solved = True
            return None  # found: the episode ends
        return "Higher." if guess < self.secret else "Lower."

    def get_reward(self) -> float:
        return max(0.0, 1.0 - 0.1 * (self.guesses - 1)) if self.solved else 0.0

    @classmethod
    def most_guesses(cls) -> int:
        """Guesses bisection needs at most to find any number of the range (7 for 1..100)."""
        return (cls.HIGH - cls.LOW + 1).bit_length()


class GoOn:
    """A benchmark environment: answers every turn with "Go on.", so an episode has exactly `env.max_turns` turns
    (scripts/bench_agents.py)."""

    def reset(self, **row) -> None:
        return None

    def respond(self, text: str) -> str:
        return "Go on."


async def go_on(client, row) -> None:
    """GoOn written as an agent against the OpenAI client (env.agent): it answers every turn with "Go on." until the
    run's env.max_turns refuses a call, and leaves scoring to reward.functions (scripts/bench_agents.py)."""
    import openai

    messages = [{"role": "user", "content": row["question"]}]
    while True:
        try:
            reply = await client.chat.completions.create(model="policy", messages=messages)
        except openai.BadRequestError:  # the episode's turns are used up
            return None
        messages += [reply.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "Go on."}]
