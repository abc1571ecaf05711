"""Tools and environments for the agent tests, written exactly as TRL documents them (GRPOTrainer's `tools` and
`environment_factory`): plain functions and classes with type hints and Google-style docstrings."""

import asyncio
import time

from rlhf.rewards.bleu import bleu_score


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    return a + b


async def shout(text: str) -> str:
    """Repeat a text in capitals, asynchronously.

    Args:
        text: What to repeat.
    """
    await asyncio.sleep(0)
    return text.upper()


def explode(reason: str) -> str:
    """A tool that always fails.

    Args:
        reason: Why it fails.
    """
    raise RuntimeError(f"boom: {reason}")


def hang(seconds: float) -> str:
    """A tool that does not answer in time.

    Args:
        seconds: How long it sleeps.
    """
    time.sleep(seconds)
    return "late"


def flood(count: int) -> str:
    """A tool that answers far too much.

    Args:
        count: How many words.
    """
    return "word " * count


class Counter:
    """A stateful environment: reset with the row, tools change the state, the reward reads it."""

    def reset(self, **row) -> str | None:
        self.total, self.target = 0, int(row.get("target", 3))
        return f" Reach {self.target}."

    def increment(self, step: int) -> str:
        """Add to the counter.

        Args:
            step: How much to add.
        """
        self.total += step
        return f"the counter is {self.total}"

    def get_reward(self) -> float:
        return 1.0 if self.total == self.target else 0.0

    def _private(self) -> None:  # not a tool
        pass


class RepeatA:
    """A multi-turn task the tiny model can learn: say "a" again and again; the environment asks twice more
    (respond), the reward is 10 x the mean BLEU of the turns against a row of a's."""

    def reset(self, **row) -> str | None:
        self.turns = []
        return None

    def respond(self, text: str) -> str | None:
        self.turns.append(text)
        return "Again." if len(self.turns) < 2 else None

    def get_reward(self) -> float:
        scores = [bleu_score(t.strip(), ["a a a a a a a a a a"]) if t.strip() else 0.0 for t in self.turns]
        return 10 * sum(scores) / max(len(scores), 1)


class Secret:
    """Draws its task with Python's random at reset and shows it: a group must see one task."""

    def reset(self, **row) -> str | None:
        import random

        return f" The secret is {random.randint(0, 10**9)}."
