"""Where prompt rows come from. Each source returns a list of dicts with the columns it has."""

import json
from pathlib import Path

from rlhf.data.bad_rows import BadRows

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def reasoning_gym_rows(task: str, size: int, seed: int) -> list[dict]:
    """GSM8K-style (and other) generated questions, offline. `answer_cot` is a worked solution: a BLEU reference."""
    import reasoning_gym

    rows = []
    for item in reasoning_gym.create_dataset(task, size=size, seed=seed):
        metadata = item.get("metadata", {})
        rows.append(
            {
                "question": item["question"],
                "answer": str(item["answer"]),
                "answer_cot": metadata.get("answer_cot", str(item["answer"])),
                # what the task's own verifier needs (the `reasoning_gym` reward)
                "rg_task": task,
                "rg_entry": item,
            }
        )
    return rows


def jsonl_rows(file: Path, bad_rows: BadRows) -> list[dict]:
    """Rows of a JSONL file, read line by line so that a bad line is named by its number (1-based). Blank lines are
    skipped; every row gets every column found in the file (None where it has none), as `datasets` would."""
    rows = []
    with open(file, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"data.path={str(file)!r}, line {number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad_rows.drop(where, f"not valid UTF-8 (byte {err.start + 1} of the line is "
                                     f"{raw[err.start:err.start + 1]!r})")
                continue
            if not text.strip():
                continue
            try:
                row = json.loads(text.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                bad_rows.drop(where, f"not valid JSON at column {err.colno} ({err.msg}); a truncated line?")
                continue
            if not isinstance(row, dict):
                bad_rows.drop(where, f"a JSON {type(row).__name__}, not an object with one field per column")
                continue
            rows.append(row)
    columns = dict.fromkeys(key for row in rows for key in row)
    return [{key: row.get(key) for key in columns} for row in rows]


def file_rows(path: str, bad_rows: BadRows | None = None) -> list[dict]:
    """Rows of a local JSONL (read here, line by line) or JSON / parquet / CSV file (read through `datasets`)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"data.path={path!r} does not exist")
    if file.suffix not in FILE_FORMATS:
        raise ValueError(f"data.path={path!r}: unsupported format {file.suffix!r}; use one of {sorted(FILE_FORMATS)}")
    if file.stat().st_size == 0:
        return []
    if file.suffix == ".jsonl":
        return jsonl_rows(file, bad_rows or BadRows("error"))
    from datasets import load_dataset

    try:
        dataset = load_dataset(FILE_FORMATS[file.suffix], data_files=str(file), split="train")
    except Exception as err:  # datasets raises many kinds; the user needs the file's name
        raise ValueError(f"data.path={path!r} could not be read as {FILE_FORMATS[file.suffix]}: {err!r}") from err
    return list(dataset)
