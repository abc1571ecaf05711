"""One environment written once, as TRL's `environment_factory` documentation shows, run by TRL 1.16 and by us.

    GRPOTrainer(..., environment_factory=Counter, train_dataset=Dataset.from_list(rows()))    # TRL
    PYTHONPATH=examples python -m rlhf.train env.factory=trl_env_counter:Counter data=file ...  # ours

Each row names a counter's starting value and a target; the model may call `increment` to move the counter, and
`get_reward()` (no argument, as in TRL) scores the counter's final state: 1.0 on the target, 1 / (1 + distance)
otherwise. A model that never calls the tool still earns a reward that depends on its row (1 / (1 + |target -
start|)), so both trainers log a meaningful, non-constant number even for a random model.

Only for the side-by-side check (scripts/trl_env_side_by_side.py): when COUNTER_ENV_LOG names a folder, `reset`
writes the arguments it received (with their Python types) and `get_reward` the state it scored, one JSON line
per call, to `<folder>/<COUNTER_ENV_SIDE>-<pid>.jsonl`; without it nothing is written.
"""

import json
import os
import random


def _record(event: str, **fields) -> None:
    folder = os.environ.get("COUNTER_ENV_LOG")
    if not folder:
        return
    side = os.environ.get("COUNTER_ENV_SIDE", "unknown")
    line = json.dumps({"event": event, "side": side, "pid": os.getpid(), **fields}, default=repr)
    with open(os.path.join(folder, f"{side}-{os.getpid()}.jsonl"), "a") as out:
        out.write(line + "\n")


class Counter:
    def __init__(self):
        self.value = 0
        self.target = 0
        self.calls = 0
        self.row_id = None

    def reset(self, **kwargs) -> str | None:
        _record("reset", kwargs=kwargs, types={k: type(v).__name__ for k, v in kwargs.items()})
        self.value = int(kwargs["start"])
        self.target = int(kwargs["target"])
        self.calls = 0
        self.row_id = kwargs.get("id")
        return None

    def increment(self, amount: int) -> str:
        """
        Add an amount to the counter.

        Args:
            amount: How much to add to the counter (negative to subtract).

        Returns:
            The counter's new value.
        """
        self.value += int(amount)
        self.calls += 1
        return str(self.value)

    def get_reward(self) -> float:
        reward = 1.0 / (1.0 + abs(self.target - self.value))
        _record("reward", id=self.row_id, value=self.value, target=self.target, calls=self.calls, reward=reward)
        return reward


def rows(n: int = 8, seed: int = 0, example_call: bool = False) -> list[dict]:
    """`n` rows with distinct distances to the target (1..n), so a model that never calls the tool earns a different
    reward on each: columns `prompt` (TRL's conversational shape), `id`, `start`, `target`. `example_call`: the prompt
    shows a tool call (adding 3) in the format the template asks for, which small models then sometimes write."""
    rng = random.Random(seed)
    distances = list(range(1, n + 1))
    rng.shuffle(distances)
    out = []
    for i, distance in enumerate(distances):
        start = rng.randint(0, 20)
        target = start + distance * rng.choice([-1, 1])
        if example_call:
            text = (f"The counter shows {start}. Make it show {target}: reply with a tool call such as\n<tool_call>\n"
                    '{"name": "increment", "arguments": {"amount": 3}}\n</tool_call>')
        else:
            text = (f"The counter shows {start}. Use the increment tool to make it show {target}, "
                    "then reply with the word done.")
        out.append({"id": f"counter-{i}", "prompt": [{"role": "user", "content": text}], "start": start,
                    "target": target})
    return out
