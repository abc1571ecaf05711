"""Canonical prompt rows and the stream of tokenized prompt batches the driver consumes.

A table of rows is a list of dicts (generated data: reasoning-gym, an environment's task) or an Arrow table from
`datasets` (files, any size: memory-mapped, never held in Python). Over an Arrow table the column mapping, the row
checks, the chat template and the tokenizer run as batched `map`s (several processes for large tables), cached on
disk by the data's fingerprint and the settings, so a second run or a resume reads them back in seconds; batches are
drawn by index, so a draw costs the same whatever the size of the data.
"""

import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from rlhf.data.bad_rows import BadRows
from rlhf.data.row_names import ROW, RowNames, unnamed
from rlhf.data.sources import file_rows, reasoning_gym_rows

log = logging.getLogger(__name__)
CANONICAL = ("prompt", "references", "answer")
PREPARED = ("_text", "_ids", "_length")  # the stream's own columns, beside the canonical ones
HIDDEN = (*PREPARED, ROW)  # never given to reward functions
PROCESSES_FROM = 50_000  # rows from which the map runs in several processes
VERSION = "3"  # of the preparation below: a change makes every cache stale


def load_rows(cfg):
    """Rows from `cfg.source` with `cfg.columns` mapped (canonical name -> column name): a list of dicts, or an Arrow
    table for files. Every row gets `prompt`; `references` (list of str) and `answer` when mapped; other columns pass
    through unchanged so reward functions can use them. Rows the run cannot use stop it or are dropped
    (`cfg.bad_rows`), named where the user finds them (rlhf/data/row_names.py); every row keeps its `_row` for that."""
    bad_rows, names = BadRows(cfg.bad_rows), RowNames(cfg)
    what = f"data.path={cfg.path!r}" if cfg.source == "file" else f"data.source={cfg.source!r}"
    if cfg.source == "reasoning_gym":
        rows = reasoning_gym_rows(cfg.task, cfg.size, cfg.seed)
    elif cfg.source == "file":
        rows = file_rows(cfg.path, bad_rows)
    elif cfg.source == "env":  # the environment makes the task at reset: rows only number the episodes
        rows = [{"prompt": cfg.task, "index": i} for i in range(cfg.size)]
    else:
        raise ValueError(f"unknown data.source {cfg.source!r}; choose reasoning_gym, file or env")
    if not len(rows):
        bad_rows.report(0, what)
        raise ValueError(f"data source {cfg.source!r} produced no rows (path={cfg.path!r})")

    found = sorted(c for c in (rows.column_names if hasattr(rows, "column_names") else rows[0]) if c != ROW)
    mapping = {k: v for k, v in cfg.columns.items() if v is not None}
    if "prompt" not in mapping:
        raise ValueError("data.columns.prompt must name the column that holds the prompt")
    for canonical, column in mapping.items():
        if canonical not in CANONICAL:
            raise ValueError(f"data.columns.{canonical}: unknown canonical column; choose from {CANONICAL}")
        if column not in found:
            raise ValueError(f"data.columns.{canonical}={column!r} is not a column of the data; found: {found}")
    if isinstance(rows, list):
        table = canonical_rows(rows, mapping, range(len(rows)))
    else:
        table = rows.map(lambda batch, indices: as_columns(canonical_rows(as_rows(batch), mapping, indices)),
                         batched=True, with_indices=True, remove_columns=rows.column_names, desc="data rows",
                         new_fingerprint=_fingerprint(rows, mapping), **_processes(len(rows)))
    return keep_good(table, bad_rows, what, names)


def canonical_rows(rows: list[dict], mapping: dict, numbers) -> list[dict]:
    """Rows renamed to the canonical columns and checked; `_problem` says what makes one unusable ("" if nothing).
    `numbers`: the rows' indices, their `_row` unless they have one (rows read line by line, some dropped)."""
    out = []
    for number, row in zip(numbers, rows):
        mapped = {k: v for k, v in row.items() if k not in mapping.values()}
        for canonical, column in mapping.items():
            mapped[canonical] = row.get(column)
        mapped[ROW] = row.get(ROW, number)
        mapped["_problem"] = _row_problem(mapped) or ""
        out.append(mapped)
    return out


def as_rows(columns: dict) -> list[dict]:
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def as_columns(rows: list[dict]) -> dict:
    return {key: [row.get(key) for row in rows] for key in dict.fromkeys(k for row in rows for k in row)}


def _fingerprint(table, *settings) -> str:
    """A derived table's cache key: its parent's, the settings, this module's version."""
    return hashlib.sha256(json.dumps([table._fingerprint, VERSION, *settings], default=str).encode()).hexdigest()[:32]


def keep_good(table, bad_rows: BadRows, what: str, names):
    """The table without its rows that have a `_problem`: the first stops the run, or all are dropped and logged.
    `names`: a row's name from its `_row` (its position in `table` where it has none)."""
    if isinstance(table, list):
        problems = [(row.get(ROW, i), row["_problem"]) for i, row in enumerate(table) if row["_problem"]]
        kept = [{k: v for k, v in row.items() if k != "_problem"} for row in table if not row["_problem"]]
    else:
        flagged = table.filter(lambda ps: [bool(p) for p in ps], batched=True, input_columns="_problem")
        rows = flagged[ROW] if ROW in table.column_names else [i for i, p in enumerate(table["_problem"]) if p]
        problems = list(zip(rows, flagged["_problem"]))
        kept = table.filter(lambda ps: [not p for p in ps], batched=True, input_columns="_problem") if problems \
            else table
        kept = kept.remove_columns("_problem")
    for row, why in problems:
        bad_rows.drop(names(row), why)
    bad_rows.report(len(kept), what)
    return kept


def _row_problem(row: dict) -> str | None:
    """What makes the row unusable, if anything (a string reference becomes a list of one, in every row: a column of
    an Arrow table holds one type, the bad rows' too)."""
    if isinstance(row.get("references"), str):
        row["references"] = [row["references"]]
    prompt = row["prompt"]
    if not (isinstance(prompt, str) and prompt.strip()) and not (isinstance(prompt, list) and prompt):
        return f"prompt must be a non-empty string or message list, got {prompt!r}"
    if "references" in row:
        refs = row["references"]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
            return f"references must be a string or a non-empty list of strings, got {refs!r}"
    return None


TRAINING_TEMPLATE = "training"  # data.chat_template: TRL's prefix-preserving training template of the model's family


def read_chat_template(path: str | None, tokenizer=None) -> str | None:
    """The text of `data.chat_template` (a Jinja file), or None for the tokenizer's own. `training`: the training
    template TRL 1.16 ships for the tokenizer's template family (Qwen3, GPT-OSS, Gemma 3, ...: prefix-preserving, so an
    episode's history renders as its prefix), None where the tokenizer's own already is one."""
    if path is None:
        return None
    if path == TRAINING_TEMPLATE:
        from trl.chat_template_utils import get_training_chat_template

        try:
            return get_training_chat_template(tokenizer)
        except ValueError as err:
            raise ValueError(f"data.chat_template=training: TRL ships no training template for this model's chat "
                             f"template ({err}); give a Jinja file") from err
    if not Path(path).is_file():
        raise FileNotFoundError(f"data.chat_template={path!r} does not exist (a Jinja chat template file)")
    return Path(path).read_text()


@dataclass
class PromptBatch:
    rows: list[dict]  # the canonical rows, for reward functions
    token_ids: list[list[int]]  # chat-templated prompt tokens
    texts: list[str]  # the templated prompt text


class ShuffledEpochs:
    """Endless epochs over `size` indices, each in its own seeded shuffle; its cursor (epoch, position) is all the
    state a resume needs. Prompts (PromptStream) and demonstrations (rlhf/sft/data.py) are drawn through one."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch, self.position = size, seed, 0, 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def draw(self, size: int) -> list[int]:
        """The next `size` indices, moving the cursor."""
        picked = []
        while len(picked) < size:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            picked.append(self._order[self.position])
            self.position += 1
        return picked

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._shuffled(self.epoch)


class PromptStream:
    """Endless shuffled epochs over the rows; its cursor (epoch, position) is all the state a resume needs.
    A prompt longer than `max_prompt_tokens` stops the run or is dropped (`bad_rows`, as `data.bad_rows`)."""

    def __init__(self, rows, tokenizer, system_prompt: str | None, max_prompt_tokens: int, seed: int,
                 bad_rows: str = "error", chat_template: str | None = None, chat_template_kwargs: dict | None = None,
                 reserved_tokens: int = 0, names=None):
        """`rows`: a table from `load_rows`. `chat_template`: Jinja text replacing the tokenizer's;
        `chat_template_kwargs` reach the template (e.g. `enable_thinking: false` for Qwen3-style templates). A prompt
        given as a message list keeps its roles. `reserved_tokens`: what an episode's prompt adds to every row's (the
        tools' descriptions), counted against `max_prompt_tokens`. `names`: the rows' `RowNames` from where they were
        loaded, which name an over-long prompt (without: its 1-based row)."""
        self.reserved_tokens = reserved_tokens
        render = Renderer(tokenizer, system_prompt, chat_template, dict(chat_template_kwargs or {}), max_prompt_tokens,
                          reserved_tokens)
        if isinstance(rows, list):
            table = [{**row, **prepared} for row, prepared in zip(rows, render.rows(rows))]
        else:
            table = rows.map(lambda batch: as_columns(render.rows(as_rows(batch))), batched=True,
                             desc="templating and tokenizing",
                             new_fingerprint=_fingerprint(rows, render.key()), **_processes(len(rows)))
        self.table = keep_good(table, BadRows(bad_rows), "the data (over-long prompts)", names or unnamed)
        self.columns = [c for c in (self.table.column_names if not isinstance(self.table, list) else self.table[0])
                        if c not in HIDDEN]
        self.cursor = ShuffledEpochs(len(self.table), seed)

    def __len__(self) -> int:
        return len(self.table)

    def batch(self, indices) -> PromptBatch:
        """The rows at `indices` (of the table), prepared."""
        indices = list(indices)
        if isinstance(self.table, list):
            picked = [self.table[i] for i in indices]
        else:
            columns = self.table[indices]  # one read of just these rows
            picked = [dict(zip(columns, values)) for values in zip(*columns.values())]
        return PromptBatch([{k: row[k] for k in self.columns} for row in picked], [row["_ids"] for row in picked],
                           [row["_text"] for row in picked])

    def everything(self) -> PromptBatch:
        """Every row, in the data's order (an eval set)."""
        return self.batch(range(len(self)))

    def longest(self) -> list[int]:
        """The longest prompt's tokens (the memory pre-flight's case)."""
        if isinstance(self.table, list):
            lengths = [row["_length"] for row in self.table]
            return self.batch([max(range(len(lengths)), key=lengths.__getitem__)]).token_ids[0]
        lengths = self.table.with_format("numpy")["_length"][:]  # a lazy column: sliced, it is read at once
        return self.batch([int(lengths.argmax())]).token_ids[0]

    def draw(self, size: int) -> list[int]:
        """The indices of the next `size` rows, moving the cursor."""
        return self.cursor.draw(size)

    def next_batch(self, size: int) -> PromptBatch:
        return self.batch(self.draw(size))

    def state_dict(self) -> dict:
        return self.cursor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.cursor.load_state_dict(state)


def with_system(messages: list[dict], parts: list[str]) -> list[dict]:
    """`messages` with our system text (`parts`: data.system_prompt, a tools listing) as its system message: added to
    the end of a system message the messages open with (a row's, an agent's), else one of its own in front. One system
    message, as templates expect (some refuse a second); every prompt is built this way (RL prompts, episodes, an
    agent's calls, SFT demonstrations)."""
    if not parts:
        return messages
    if messages and messages[0].get("role") == "system":
        own = messages[0].get("content") or ""
        if isinstance(own, list):  # content blocks: their texts
            own = "".join(block.get("text", "") for block in own if isinstance(block, dict))
        return [{**messages[0], "content": "\n\n".join([own, *parts])}, *messages[1:]]
    return [{"role": "system", "content": "\n\n".join(parts)}, *messages]


class Renderer:
    """A row's prompt as its chat-templated text and tokens. A plain-string prompt under a template that only wraps
    its content (checked with two probes) is wrapped directly, without Jinja per row."""

    def __init__(self, tokenizer, system_prompt, chat_template, template_kwargs, max_prompt_tokens: int,
                 reserved_tokens: int = 0):
        self.tokenizer, self.system_prompt = tokenizer, system_prompt
        self.chat_template, self.kwargs, self.max_prompt_tokens = chat_template, template_kwargs, max_prompt_tokens
        self.reserved = reserved_tokens
        self.wrap = self._wrapping()  # (before, after) the content, or None: Jinja for every prompt

    def key(self) -> list:
        """What the prepared columns depend on (the cache's fingerprint)."""
        return [getattr(self.tokenizer, "name_or_path", ""), len(self.tokenizer), self.system_prompt,
                self.chat_template or self.tokenizer.chat_template, self.kwargs, self.max_prompt_tokens, self.reserved]

    def template(self, prompt) -> str:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        messages = with_system(messages, [self.system_prompt] if self.system_prompt else [])
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  chat_template=self.chat_template, **self.kwargs)

    def _wrapping(self) -> tuple[str, str] | None:
        # probes with white space around them: a template that trims or escapes the content gets Jinja for every row
        first, second = " \n\u2063A<&\u2063 \n", "\tB\u2063\n"
        rendered = self.template(first)
        if rendered.count(first) != 1:
            return None
        before, after = rendered.split(first)
        return (before, after) if self.template(second) == before + second + after else None

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text. A fast tokenizer's own batch encoder, without the wrapper's per-call conversions:
        the same ids, in ~30% less time (the tokenizer was 90% of a million-row start)."""
        if getattr(self.tokenizer, "is_fast", False):
            return [e.ids for e in self.tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def rows(self, rows: list[dict]) -> list[dict]:
        """Each row's `_text`, `_ids`, `_length` and `_problem` (a prompt over the limit; keep_good names the row)."""
        texts = [self.wrap[0] + row["prompt"] + self.wrap[1] if self.wrap and isinstance(row["prompt"], str)
                 else self.template(row["prompt"]) for row in rows]
        ids = self.encode(texts) if texts else []
        out = []
        for text, tokens in zip(texts, ids):
            tools = f" and an episode adds {self.reserved} for the tools' descriptions" if self.reserved else ""
            problem = (f"prompt has {len(tokens)} tokens{tools}, more than data.max_prompt_tokens="
                       f"{self.max_prompt_tokens}; raise the limit or drop the row"
                       if len(tokens) + self.reserved > self.max_prompt_tokens else "")
            out.append({"_text": text, "_ids": tokens, "_length": len(tokens), "_problem": problem})
        return out


def _processes(rows: int) -> dict:
    """`map`'s num_proc: the cores for a large table, none for a small one (starting processes costs seconds)."""
    return {"num_proc": min(os.cpu_count() or 1, 8)} if rows >= PROCESSES_FROM and (os.cpu_count() or 1) > 1 else {}


def hold_out(rows, count: int, seed: int):
    """(training rows, `count` held-out rows): a fixed random choice, the same for every run of one data seed."""
    if count >= len(rows):
        raise ValueError(f"eval.held_out={count} leaves no training rows of the data's {len(rows)}: lower it, or give "
                         "the eval set its own data (eval.data)")
    chosen = set(random.Random(f"{seed}/eval").sample(range(len(rows)), count))
    train = [i for i in range(len(rows)) if i not in chosen]
    held = sorted(chosen)
    if isinstance(rows, list):
        return [rows[i] for i in train], [rows[i] for i in held]
    return rows.select(train), rows.select(held)


def prompt_sets(cfg, tokenizer, reserved_tokens: int = 0) -> tuple["PromptStream", PromptBatch | None]:
    """The training stream and the eval set (None without evaluation): `eval.data`'s rows, or `eval.held_out`
    rows of the training data, which the stream then never draws. Both go through the same chat template.
    `reserved_tokens`: what an episode's prompt adds to a row's (PromptStream)."""
    rows, eval_rows = load_rows(cfg.data), None
    names = eval_names = RowNames(cfg.data)
    if cfg.eval.every and cfg.eval.data:
        eval_rows = load_rows(replace(cfg.data, **cfg.eval.data))
        eval_names = RowNames(replace(cfg.data, **cfg.eval.data))
    elif cfg.eval.every:
        rows, eval_rows = hold_out(rows, cfg.eval.held_out, cfg.data.seed)
    stream = partial(PromptStream, tokenizer=tokenizer, system_prompt=cfg.data.system_prompt,
                     max_prompt_tokens=cfg.data.max_prompt_tokens, seed=cfg.seed, bad_rows=cfg.data.bad_rows,
                     chat_template=read_chat_template(cfg.data.chat_template, tokenizer),
                     chat_template_kwargs=dict(cfg.data.chat_template_kwargs or {}), reserved_tokens=reserved_tokens)
    eval_set = stream(eval_rows, names=eval_names).everything() if eval_rows is not None else None
    return stream(rows, names=names), eval_set
