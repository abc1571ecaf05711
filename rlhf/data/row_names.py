"""A bad row named where its user finds it: a file's by file and 1-based line (JSONL, CSV) or 1-based row (parquet, a
JSON document, a `save_to_disk` folder), a generated data set's by its 1-based row.

Every loaded row carries `_row`, its 0-based record in the data as read (over every file of a glob or folder, in order;
a record: a non-blank JSONL line, good or bad, a CSV record, a parquet or JSON row). It survives the column mapping,
the dropping of bad rows and the held-out split, so the prompt checks of the stream name a row as the loader would.
Lines are counted only when a row is to be named: the files are read again then, never on a good run."""

import csv
import json
from collections.abc import Sequence
from pathlib import Path

ROW = "_row"


class RowNames:
    def __init__(self, cfg):
        """`cfg`: the data settings (`source`, `path`, `task`)."""
        self.source, self.path, self.task = cfg.source, cfg.path, cfg.task
        self._files = None  # (file, unit, [line or row of each record]) in record order, read at the first name

    def __call__(self, record: int) -> str:
        if self.source != "file":
            task = f" ({self.task!r})" if self.task and self.source == "reasoning_gym" else ""
            return f"data.source={self.source!r}{task}, row {record + 1}"
        if self._files is None:
            self._files = _records(self.path)
        for file, unit, numbers in self._files:
            if record < len(numbers):
                return f"data.path={str(file)!r}, {unit} {numbers[record]}"
            record -= len(numbers)
        return f"data.path={self.path!r}, record {record + 1}"  # past the files' end: changed since they were read


def unnamed(record: int) -> str:
    """A table that did not come from `load_rows` with its names (a script's own rows): its 1-based row."""
    return f"data row {record + 1}"


def _records(path: str) -> list[tuple[Path, str, Sequence[int]]]:
    from rlhf.data.sources import data_files

    if Path(path).is_dir() and (Path(path) / "dataset_info.json").exists():
        from datasets import load_from_disk

        return [(Path(path), "row", range(1, len(load_from_disk(path)) + 1))]
    return [(file, *_file_records(file)) for file in data_files(path)]


def _file_records(file: Path) -> tuple[str, Sequence[int]]:
    if file.suffix == ".jsonl":
        with open(file, "rb") as f:
            return "line", [number for number, raw in enumerate(f, start=1) if raw.strip()]
    if file.suffix == ".csv":  # a record's first line (a quoted field may span lines); the header is no record
        with open(file, newline="", encoding="utf-8", errors="replace") as f:
            reader, numbers, before = csv.reader(f), [], 0
            for fields in reader:
                if fields:
                    numbers.append(before + 1)
                before = reader.line_num
            return "line", numbers[1:]
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        return "row", range(1, pq.ParquetFile(file).metadata.num_rows + 1)
    try:  # .json: one document (a list of rows), or JSON lines under another name
        document = json.loads(file.read_text(encoding="utf-8", errors="replace"))
        return "row", range(1, (len(document) if isinstance(document, list) else 1) + 1)
    except json.JSONDecodeError:
        with open(file, "rb") as f:
            return "line", [number for number, raw in enumerate(f, start=1) if raw.strip()]
