"""Canonical prompt rows and the stream of tokenized prompt batches the driver consumes."""

import random
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from rlhf.data.bad_rows import BadRows
from rlhf.data.sources import file_rows, reasoning_gym_rows

CANONICAL = ("prompt", "references", "answer")


def load_rows(cfg) -> list[dict]:
    """Load rows from `cfg.source` and rename columns per `cfg.columns` (canonical name -> column name).

    Every row gets `prompt`; `references` (list of str) and `answer` when mapped; other columns pass through
    unchanged so reward functions can use them. Rows the run cannot use stop it or are dropped (`cfg.bad_rows`).
    """
    bad_rows = BadRows(cfg.bad_rows)
    what = f"data.path={cfg.path!r}" if cfg.source == "file" else f"data.source={cfg.source!r}"
    if cfg.source == "reasoning_gym":
        rows = reasoning_gym_rows(cfg.task, cfg.size, cfg.seed)
    elif cfg.source == "file":
        rows = file_rows(cfg.path, bad_rows)
    elif cfg.source == "env":  # the environment makes the task at reset: rows only number the episodes
        rows = [{"prompt": cfg.task, "index": i} for i in range(cfg.size)]
    else:
        raise ValueError(f"unknown data.source {cfg.source!r}; choose reasoning_gym, file or env")
    if not rows:
        bad_rows.report(0, what)
        raise ValueError(f"data source {cfg.source!r} produced no rows (path={cfg.path!r})")

    found = sorted(rows[0])
    mapping = {k: v for k, v in cfg.columns.items() if v is not None}
    if "prompt" not in mapping:
        raise ValueError("data.columns.prompt must name the column that holds the prompt")
    for canonical, column in mapping.items():
        if canonical not in CANONICAL:
            raise ValueError(f"data.columns.{canonical}: unknown canonical column; choose from {CANONICAL}")
        if column not in rows[0]:
            raise ValueError(f"data.columns.{canonical}={column!r} is not a column of the data; found: {found}")

    out = []
    for index, row in enumerate(rows):
        mapped = {k: v for k, v in row.items() if k not in mapping.values()}
        for canonical, column in mapping.items():
            mapped[canonical] = row.get(column)
        problem = _row_problem(mapped)
        if problem:
            bad_rows.drop(f"data row {index}", problem)
        else:
            out.append(mapped)
    bad_rows.report(len(out), what)
    return out


def _row_problem(row: dict) -> str | None:
    """What makes the row unusable, if anything (a string reference becomes a list of one)."""
    prompt = row["prompt"]
    if not (isinstance(prompt, str) and prompt.strip()) and not (isinstance(prompt, list) and prompt):
        return f"prompt must be a non-empty string or message list, got {prompt!r}"
    if "references" in row:
        refs = row["references"]
        if isinstance(refs, str):
            row["references"] = refs = [refs]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            return f"references must be a string or a non-empty list of strings, got {refs!r}"
    return None


def read_chat_template(path: str | None) -> str | None:
    """The text of `data.chat_template` (a Jinja file), or None for the tokenizer's own."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise FileNotFoundError(f"data.chat_template={path!r} does not exist (a Jinja chat template file)")
    return Path(path).read_text()


@dataclass
class PromptBatch:
    rows: list[dict]  # the canonical rows, for reward functions
    token_ids: list[list[int]]  # chat-templated prompt tokens
    texts: list[str]  # the templated prompt text


class PromptStream:
    """Endless shuffled epochs over the rows; its cursor (epoch, position) is all the state a resume needs.
    A prompt longer than `max_prompt_tokens` stops the run or is dropped (`bad_rows`, as `data.bad_rows`)."""

    def __init__(self, rows: list[dict], tokenizer, system_prompt: str | None, max_prompt_tokens: int, seed: int,
                 bad_rows: str = "error", chat_template: str | None = None, chat_template_kwargs: dict | None = None):
        """`chat_template`: Jinja text replacing the tokenizer's; `chat_template_kwargs` reach the template (e.g.
        `enable_thinking: false` for Qwen3-style templates). A prompt given as a message list keeps its roles."""
        self.rows, self.seed = [], seed
        self.epoch, self.position = 0, 0
        self.texts, self.token_ids = [], []
        dropped = BadRows(bad_rows)
        for index, row in enumerate(rows):
            messages = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
            if system_prompt:
                messages = [{"role": "system", "content": system_prompt}, *messages]
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 chat_template=chat_template, **(chat_template_kwargs or {}))
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > max_prompt_tokens:
                dropped.drop(f"data row {index}", f"prompt has {len(ids)} tokens, more than data.max_prompt_tokens="
                                                  f"{max_prompt_tokens}; raise the limit or drop the row")
                continue
            self.rows.append(row)
            self.texts.append(text)
            self.token_ids.append(ids)
        dropped.report(len(self.rows), "the data (over-long prompts)")
        self._order = self._shuffled(0)

    def everything(self) -> "PromptBatch":
        """Every row, in the data's order (an eval set)."""
        return PromptBatch(list(self.rows), list(self.token_ids), list(self.texts))

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next_batch(self, size: int) -> PromptBatch:
        picked = []
        while len(picked) < size:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            picked.append(self._order[self.position])
            self.position += 1
        return PromptBatch(
            rows=[self.rows[i] for i in picked],
            token_ids=[self.token_ids[i] for i in picked],
            texts=[self.texts[i] for i in picked],
        )

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._shuffled(self.epoch)


def hold_out(rows: list[dict], count: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, `count` held-out rows): a fixed random choice, the same for every run of one data seed."""
    if count >= len(rows):
        raise ValueError(f"eval.held_out={count} leaves no training rows of the data's {len(rows)}: lower it, or give "
                         "the eval set its own data (eval.data)")
    chosen = set(random.Random(f"{seed}/eval").sample(range(len(rows)), count))
    return [r for i, r in enumerate(rows) if i not in chosen], [r for i, r in enumerate(rows) if i in chosen]


def prompt_sets(cfg, tokenizer) -> tuple["PromptStream", PromptBatch | None]:
    """The training stream and the eval set (None without evaluation): `eval.data`'s rows, or `eval.held_out`
    rows of the training data, which the stream then never draws. Both go through the same chat template."""
    rows, eval_rows = load_rows(cfg.data), None
    if cfg.eval.every and cfg.eval.data:
        eval_rows = load_rows(replace(cfg.data, **cfg.eval.data))
    elif cfg.eval.every:
        rows, eval_rows = hold_out(rows, cfg.eval.held_out, cfg.data.seed)
    stream = partial(PromptStream, tokenizer=tokenizer, system_prompt=cfg.data.system_prompt,
                     max_prompt_tokens=cfg.data.max_prompt_tokens, seed=cfg.seed, bad_rows=cfg.data.bad_rows,
                     chat_template=read_chat_template(cfg.data.chat_template),
                     chat_template_kwargs=dict(cfg.data.chat_template_kwargs or {}))
    return stream(rows), stream(eval_rows).everything() if eval_rows is not None else None
