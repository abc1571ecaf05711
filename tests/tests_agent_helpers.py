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


# ---- agents part 2: environments written as TRL 1.16 documents environment_factory ----

class Shop:
    """Built by a factory with an argument (a functools.partial, as TRL's docs allow any callable)."""

    def __init__(self, stock: int):
        self.stock = stock

    def reset(self, **kwargs) -> str | None:
        self.sold = 0
        return None

    def buy(self, count: int) -> str:
        """Buy items.

        Args:
            count: How many.
        """
        if count > self.stock - self.sold:
            raise ValueError(f"only {self.stock - self.sold} left")
        self.sold += count
        return f"sold {count}"

    def get_reward(self) -> float:
        return float(self.sold)


def make_counter() -> Counter:
    """A factory that is a plain function."""
    return Counter()


class NeedsArgument:
    def __init__(self, secret):
        self.secret = secret

    def reset(self, **kwargs) -> None:
        return None


class Quiz:
    """reset names a column of the data under its own name, as TRL passes them."""

    def reset(self, question, answer, **kwargs) -> str:
        self.question, self.answer = question, answer
        return f" (quiz: {question})"

    def answer_is(self, value: str) -> str:
        """Submit an answer.

        Args:
            value: The answer.
        """
        self.given = value
        return "noted"

    def get_reward(self) -> float:
        return float(getattr(self, "given", None) == str(self.answer))


class Talker:
    """A TRL environment whose tool happens to be named `respond`: a tool, as in TRL, unless env.reply names it."""

    def reset(self, **kwargs) -> None:
        self.heard = []

    def respond(self, text: str) -> str:
        """Say something to the other side.

        Args:
            text: What to say.
        """
        self.heard.append(text)
        return "ok"


class BrokenReward(Counter):
    def get_reward(self) -> float:
        raise RuntimeError("the judge is down")


class BrokenReset(Counter):
    def reset(self, **row) -> str:
        raise KeyError("target")


class Ledger:
    """Two tools that change state: their order within a turn matters; one async tool keeps state on its loop."""

    def reset(self, **kwargs) -> None:
        self.entries, self.loop = [], None

    def write(self, entry: str) -> str:
        """Append an entry.

        Args:
            entry: The entry.
        """
        time.sleep(0.05 if entry == "first" else 0)  # the first call is the slower one
        self.entries.append(entry)
        return f"{len(self.entries)} entries"

    def read(self) -> str:
        """Read the ledger."""
        return ",".join(self.entries)

    async def stamp(self) -> str:
        """Stamp the ledger on the environment's event loop (a client made on one loop fails on another)."""
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        if loop is not self.loop:
            raise RuntimeError("bound to a different event loop")
        await asyncio.sleep(0)
        return "stamped"


def finish(summary: str) -> str:
    """End the episode with a summary.

    Args:
        summary: The summary.
    """
    from rlhf.agents import EndEpisode

    raise EndEpisode(f"finished: {summary}")


class Graded:
    """A per-turn reward (step_reward) beside the episode's."""

    def reset(self, **kwargs) -> None:
        self.turn = 0

    def reply(self, text: str) -> str | None:
        self.turn += 1
        return "next" if self.turn < 3 else None

    def step_reward(self) -> float:
        return 0.5 * self.turn

    def get_reward(self) -> float:
        return 1.0


def turns_seen(prompts, completions, completion_ids, environments, trainer_state, log_metric, log_extra, **kwargs):
    """A TRL reward function that reads TRL's extras: each episode's environment as it ended (RepeatA's turns), the
    tokens, the trainer's progress; logs a metric and an extra column."""
    assert len(environments) == len(completions) == len(completion_ids) == len(prompts)
    assert all(isinstance(ids, list) and ids for ids in completion_ids)
    turns = [float(len(env.turns)) for env in environments]
    log_metric("turns_seen", sum(turns) / len(turns))
    log_extra("step_seen", [trainer_state.global_step] * len(completions))
    log_extra("max_steps_seen", [trainer_state.max_steps] * len(completions))
    return turns


# ---- agents written against the OpenAI client (env.agent) ----

SEEN = []  # what the agents of a test saw come back, for the test to compare with the episode


async def two_calls(client, row):
    """A two-call tool loop, written as agents are: the real openai client, the reply appended as the SDK gives it,
    a tool's answer after it."""
    tools = [{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}]
    messages = [{"role": "user", "content": row["question"]}]
    first = await client.chat.completions.create(model="policy", messages=messages, tools=tools, max_tokens=6,
                                                 logprobs=True)
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": "call_x", "content": "5"}]
    second = await client.chat.completions.create(model="policy", messages=messages, tools=tools, max_tokens=6,
                                                  logprobs=True, stream=False)
    SEEN.append([first, second])
    return 1.0


async def rewrites(client, row):
    """Starts over with a summary of its history on its second call: a new segment."""
    first = await client.chat.completions.create(model="policy", messages=[{"role": "user", "content": row["question"]}],
                                                 max_tokens=4)
    summary = f"Earlier you said: {first.choices[0].message.content!r}. Say it again."
    await client.chat.completions.create(model="policy", messages=[{"role": "user", "content": summary}], max_tokens=4)
    return {"said": 0.5}


async def hangs(client, row):
    await asyncio.sleep(3600)


def sync_agent(client, row):
    """A plain function: it gets a sync client and runs in a thread."""
    reply = client.chat.completions.create(model="policy", messages=[{"role": "user", "content": row["question"]}],
                                           max_tokens=4)
    return float(len(reply.choices[0].message.content or "") > 0)


async def completes(client, row):
    """A legacy-completions agent (/v1/completions): a text prompt, then that text with the reply and an
    observation appended (the same segment), then a prompt of token ids, streamed (a segment of its own)."""
    prompt = f"Q: {row['question']}\nA:"
    first = await client.completions.create(model="policy", prompt=prompt, max_tokens=5, logprobs=0)
    extended = prompt + first.choices[0].text + "\nObservation: 5\nA:"
    second = await client.completions.create(model="policy", prompt=extended, max_tokens=5, logprobs=0)
    stream = await client.completions.create(model="policy", prompt=[5, 6, 7, 8], max_tokens=4, stream=True,
                                             stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    SEEN.append([prompt, extended, first, second, chunks])
    return 1.0


async def stops_at_newline(client, row):
    """A completion cut at a stop string."""
    SEEN.append(await client.completions.create(model="policy", prompt="Count:", max_tokens=8, stop="\n", logprobs=0))
    return 1.0
