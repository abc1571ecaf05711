"""Demonstrations: rows in TRL's SFT formats through the data path RL prompts take (rlhf/data: files, glob, folders,
`save_to_disk`, reasoning-gym; `data.columns`; `data.bad_rows`, each bad row named where its user finds it), rendered
to tokens and target masks (rlhf/sft/rendering.py) by a batched `map` over an Arrow table (cached by the data's
fingerprint and the settings), drawn by index like prompts.

Formats, as TRL's SFTTrainer reads them (a column under TRL's name needs no mapping; `data.columns` maps one of
another name): `messages` (a conversation; `tools` beside it, a list of schemas or its JSON), `prompt` + `completion`
(strings or message lists), and ours for RL data: `prompt` + `references`, the first reference being the
completion (BLEUBERI's SFT baseline on the same data as its GRPO).

Budget: the prompt (system prompt and tools included) within `data.max_prompt_tokens`, the rest within the RL
run's completion budget (`rollout.max_new_tokens`, or `env.max_episode_tokens` with episodes): an over-long row
follows `data.bad_rows`, or with `data.truncate` its end past the budget is cut and the row counted.
"""

import logging
from dataclasses import dataclass, replace

from rlhf.data.bad_rows import BadRows
from rlhf.data.prompts import PromptBatch, PromptStream, ShuffledEpochs, _fingerprint, as_columns, as_rows, hold_out, \
    keep_good, read_chat_template
from rlhf.data.row_names import ROW, RowNames
from rlhf.data.sources import file_rows, reasoning_gym_rows
from rlhf.sft.rendering import Conversation, DemonstrationError, DemonstrationRenderer, conversation

log = logging.getLogger(__name__)
COLUMNS = ("prompt", "completion", "messages", "tools", "references", "answer")  # canonical, as TRL names them
FORMAT_COLUMNS = ("completion", "messages", "tools")  # what an eval row does not pass on to reward functions
PREPARED = ("_ids", "_mask", "_length", "_prompt_length", "_truncated")
VERSION = "1"  # of the preparation below: a change makes every cache stale


def make_renderer(cfg, data_cfg, tokenizer) -> tuple[DemonstrationRenderer, object]:
    """The renderer an RL run of `cfg` would render its episodes with (the episodes' own when `env` names tools or an
    environment: the same tools prompt and tool format), and `schemas(row)`: the tools shown to the row (None: the
    run's)."""
    from rlhf.agents.rendering import Renderer

    if cfg.env.enabled:
        from rlhf.agents.episodes import EpisodeRunner

        runner = EpisodeRunner(None, replace(cfg, data=data_cfg), tokenizer)
        runner.close()  # only its renderer and tools are used
        envs = runner.environments

        def schemas(row):
            return runner.schemas[envs.spec_for(row).name if envs else None]

        renderer = runner.renderer
    else:
        renderer = Renderer(tokenizer, [], cfg.env.tool_format, cfg.env.tools_prompt, data_cfg.system_prompt,
                            read_chat_template(data_cfg.chat_template, tokenizer),
                            dict(data_cfg.chat_template_kwargs or {}))
        schemas = None
    return DemonstrationRenderer(renderer, cfg.sft.assistant_only_loss, cfg.sft.completion_only_loss), schemas


def source_rows(data_cfg):
    """The data's rows as read: a list of dicts or an Arrow table, and what names it in messages."""
    if data_cfg.source == "reasoning_gym":
        return reasoning_gym_rows(data_cfg.task, data_cfg.size, data_cfg.seed)
    if data_cfg.source == "file":
        return file_rows(data_cfg.path, BadRows(data_cfg.bad_rows))
    if data_cfg.source == "demonstrations":  # a function of ours or the user's that writes demonstrations
        from rlhf.imports import import_object

        return import_object(data_cfg.task)(size=data_cfg.size, seed=data_cfg.seed)
    raise ValueError(f"data.source={data_cfg.source!r} has no demonstrations; give a file (data.source=file), "
                     "reasoning_gym rows (their references are the completions) or data.source=demonstrations with "
                     "data.task=pkg.module:function")


def mapping_of(data_cfg, found: list[str]) -> dict[str, str]:
    """`data.columns` (canonical -> the data's column) for the columns the data has. A default mapping of `prompt` or
    `references` the data lacks is left out when the data carries TRL's own `messages` or `completion`."""
    mapping = {k: v for k, v in data_cfg.columns.items() if v is not None}
    trl_format = "messages" in found or "completion" in found
    for canonical, column in list(mapping.items()):
        if canonical not in COLUMNS:
            raise ValueError(f"data.columns.{canonical}: unknown canonical column; choose from {COLUMNS}")
        if column not in found:
            if trl_format and canonical in ("prompt", "references"):
                del mapping[canonical]
                continue
            raise ValueError(f"data.columns.{canonical}={column!r} is not a column of the data; found: {found}")
    return mapping


class Preparation:
    """Each row renamed to the canonical columns, split into a conversation, tokenized and checked against the
    budget: `_ids`, `_mask`, `_length`, `_prompt_length`, `_truncated`, and `_problem` ("" when usable)."""

    def __init__(self, renderer: DemonstrationRenderer, schemas, mapping: dict, max_prompt_tokens: int,
                 completion_budget: int, budget_name: str, truncate: bool):
        self.renderer, self.schemas, self.mapping = renderer, schemas, mapping
        self.max_prompt_tokens, self.budget, self.budget_name = max_prompt_tokens, completion_budget, budget_name
        self.truncate = truncate

    def key(self) -> list:
        return [VERSION, self.renderer.key(), self.mapping, self.max_prompt_tokens, self.budget, self.truncate]

    def rows(self, rows: list[dict], numbers) -> list[dict]:
        return [self.row(row, number) for row, number in zip(rows, numbers)]

    def row(self, row: dict, number: int) -> dict:
        mapped = {k: v for k, v in row.items() if k not in self.mapping.values()}
        mapped.update({canonical: row.get(column) for canonical, column in self.mapping.items()})
        if isinstance(mapped.get("references"), str):
            mapped["references"] = [mapped["references"]]
        mapped[ROW] = row.get(ROW, number)
        prepared = {"_ids": [], "_mask": [], "_length": 0, "_prompt_length": 0, "_truncated": False, "_problem": ""}
        try:
            conv = conversation(mapped)
            if conv.schemas is None and self.schemas is not None:
                conv.schemas = self.schemas(mapped)
            tokens = self.renderer.tokens(conv)
        except (DemonstrationError, ValueError) as err:
            return {**mapped, **prepared, "_problem": str(err)}
        ids, mask, prompt = tokens.ids, tokens.mask, tokens.prompt_length
        after = len(ids) - prompt
        if prompt > self.max_prompt_tokens:
            prepared["_problem"] = (f"its prompt has {prompt} tokens (system prompt and tools included), more than "
                                    f"data.max_prompt_tokens={self.max_prompt_tokens}; raise the limit or drop the row")
        elif after > self.budget and not self.truncate:
            prepared["_problem"] = (f"it has {after} tokens after its prompt, more than {self.budget_name}={self.budget} "
                                    "(what an RL run samples within); raise it, drop the row, or cut such rows "
                                    "(data.truncate=true)")
        elif after > self.budget:
            ids, mask = ids[:prompt + self.budget], mask[:prompt + self.budget]
            prepared["_truncated"] = True
            if not any(mask):
                prepared["_problem"] = f"cut to {self.budget_name}={self.budget} tokens it has no target token left"
        if not prepared["_problem"] and not any(mask):
            prepared["_problem"] = "it has no target token"
        if not prepared["_problem"]:
            prepared.update(_ids=ids, _mask=mask, _length=len(ids), _prompt_length=prompt)
        return {**mapped, **prepared}


def load_demonstrations(cfg, data_cfg, renderer: DemonstrationRenderer, schemas=None):
    """The demonstrations of `data_cfg`, prepared (a list of dicts, or an Arrow table for files), bad rows dropped or
    named (`data.bad_rows`). Logs how many were cut (`data.truncate`)."""
    names = RowNames(data_cfg)
    what = f"data.path={data_cfg.path!r}" if data_cfg.source == "file" else f"data.source={data_cfg.source!r}"
    rows = source_rows(data_cfg)
    if not len(rows):
        raise ValueError(f"{what} produced no demonstrations")
    found = sorted(c for c in (rows.column_names if hasattr(rows, "column_names") else rows[0]) if c != ROW)
    budget_name = "env.max_episode_tokens" if cfg.env.enabled else "rollout.max_new_tokens"
    prepare = Preparation(renderer, schemas, mapping_of(data_cfg, found), data_cfg.max_prompt_tokens,
                          cfg.completion_budget(), budget_name, data_cfg.truncate)
    if isinstance(rows, list):
        table = prepare.rows(rows, range(len(rows)))
    else:
        # one process: the renderer holds a tool parser that does not travel to map's workers
        table = rows.map(lambda batch, indices: as_columns(prepare.rows(as_rows(batch), indices)), batched=True,
                         with_indices=True, remove_columns=rows.column_names, desc="rendering demonstrations",
                         new_fingerprint=_fingerprint(rows, prepare.key()))
    table = keep_good(table, BadRows(data_cfg.bad_rows), what, names)
    cut = sum(table["_truncated"]) if not isinstance(table, list) else sum(r["_truncated"] for r in table)
    if cut:
        log.warning("data.truncate: %d of %d demonstrations of %s were cut to %s=%d tokens after their prompt", cut,
                    len(table), what, budget_name, cfg.completion_budget())
    return table


@dataclass
class Sequences:
    """Token ids and target masks of some demonstrations (what the learner trains on)."""
    ids: list[list[int]]
    masks: list[list[int]]

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]

    @property
    def targets(self) -> int:
        return sum(sum(mask) for mask in self.masks)


class Demonstrations:
    """Endless shuffled epochs over prepared demonstrations, drawn by index through the cursor prompts use
    (`ShuffledEpochs`: its (epoch, position) is all a resume needs)."""

    def __init__(self, table, seed: int):
        self.table = table
        self.cursor = ShuffledEpochs(len(table), seed)

    def __len__(self) -> int:
        return len(self.table)

    def draw(self, size: int) -> list[int]:
        return self.cursor.draw(size)

    def sequences(self, indices) -> Sequences:
        indices = list(indices)
        if isinstance(self.table, list):
            rows = [self.table[i] for i in indices]
            return Sequences([r["_ids"] for r in rows], [r["_mask"] for r in rows])
        columns = self.table.select_columns(["_ids", "_mask"])[indices]
        return Sequences(columns["_ids"], columns["_mask"])

    def everything(self) -> Sequences:
        return self.sequences(range(len(self)))

    def rows(self, indices) -> list[dict]:
        if isinstance(self.table, list):
            return [self.table[i] for i in indices]
        return as_rows(self.table[list(indices)])

    def longest(self) -> int:
        if isinstance(self.table, list):
            return max(r["_length"] for r in self.table)
        return max(self.table["_length"])

    def targets(self) -> int:
        return sum(sum(m) for m in self._masks())

    def most_targets(self) -> int:
        """The most target tokens of one demonstration."""
        return max(sum(m) for m in self._masks())

    def _masks(self):
        return [r["_mask"] for r in self.table] if isinstance(self.table, list) else self.table["_mask"]

    def state_dict(self) -> dict:
        return self.cursor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.cursor.load_state_dict(state)


def eval_prompts(cfg, rows: list[dict], tokenizer, reserved_tokens: int = 0) -> PromptBatch:
    """Held-out demonstrations as an eval set: each one's prompt (the conversation before its last assistant turn;
    with episodes, before its first) and its target as the reference, the rest of its columns for reward functions."""
    eval_rows = []
    for row in rows:
        conv: Conversation = conversation(row)
        kept = {k: v for k, v in row.items() if k not in (*FORMAT_COLUMNS, *PREPARED, "_problem", ROW, "prompt")}
        eval_rows.append({**kept, "prompt": conv.eval_prompt(cfg.env.enabled), "references": [conv.target()]})
    stream = PromptStream(eval_rows, tokenizer, cfg.data.system_prompt, cfg.data.max_prompt_tokens, cfg.seed,
                          cfg.data.bad_rows, read_chat_template(cfg.data.chat_template, tokenizer),
                          dict(cfg.data.chat_template_kwargs or {}), reserved_tokens)
    return stream.everything()


def demonstration_sets(cfg, tokenizer, reserved_tokens: int = 0):
    """algo=sft: (training demonstrations, held-out demonstrations or None, their eval prompts or None): `eval.data`'s
    demonstrations, or `eval.held_out` rows of the data, never drawn for training."""
    renderer, schemas = make_renderer(cfg, cfg.data, tokenizer)
    table = load_demonstrations(cfg, cfg.data, renderer, schemas)
    held = None
    if cfg.eval.every and cfg.eval.data:
        eval_cfg = replace(cfg.data, **cfg.eval.data)
        held = load_demonstrations(cfg, eval_cfg, *make_renderer(cfg, eval_cfg, tokenizer))
    elif cfg.eval.every:
        table, held = hold_out(table, cfg.eval.held_out, cfg.data.seed)
    train = Demonstrations(table, cfg.seed)
    if held is None:
        return train, None, None
    held = Demonstrations(held, cfg.seed)
    return train, held, eval_prompts(cfg, held.rows(range(len(held))), tokenizer, reserved_tokens)


def warm_start_demonstrations(cfg, tokenizer) -> Demonstrations:
    """The warm start's demonstrations: `sft.data` (overrides of `data`), rendered as the RL run renders episodes.
    From the run's own data (`sft.data` null) the rows its evaluation holds out (`eval.held_out`) are left out, as
    `algo=sft` leaves them out: a warm start never trains on a held-out reference."""
    data_cfg = replace(cfg.data, **(cfg.sft.data or {}))
    table = load_demonstrations(cfg, data_cfg, *make_renderer(cfg, data_cfg, tokenizer))
    if not cfg.sft.data and cfg.eval.every and not cfg.eval.data:
        table, _ = hold_out(table, cfg.eval.held_out, cfg.data.seed)
    return Demonstrations(table, cfg.seed)
