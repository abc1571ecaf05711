"""Where prompt rows come from. Each source returns a list of dicts with the columns it has."""

import glob
import hashlib
import json
from pathlib import Path

from rlhf.data.bad_rows import BadRows
from rlhf.data.row_names import ROW

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


def jsonl_rows(files: list[Path], bad_rows: BadRows) -> list[dict]:
    """Rows of JSONL files, read line by line so that a bad line is named by its number (1-based). Blank lines are
    skipped; every row gets every column found in the files (None where it has none), as `datasets` would, and `_row`,
    its record (non-blank line, good or bad) over the files, as Arrow numbers its rows (rlhf/data/row_names.py)."""
    rows, record = [], -1
    for file in files:
        with open(file, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                record += 1
                where = f"data.path={str(file)!r}, line {number}"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    bad_rows.drop(where, f"not valid UTF-8 (byte {err.start + 1} of the line is "
                                         f"{raw[err.start:err.start + 1]!r})")
                    continue
                try:
                    row = json.loads(text.rstrip("\r\n"))
                except json.JSONDecodeError as err:
                    bad_rows.drop(where, f"not valid JSON at column {err.colno} ({err.msg}); a truncated line?")
                    continue
                if not isinstance(row, dict):
                    bad_rows.drop(where, f"a JSON {type(row).__name__}, not an object with one field per column")
                    continue
                rows.append({**row, ROW: record})
    columns = dict.fromkeys(key for row in rows for key in row)
    return [{key: row.get(key) for key in columns} for row in rows]


def file_rows(path: str, bad_rows: BadRows | None = None):
    """The rows of local data: an Arrow table (`datasets`, memory-mapped, converted once and cached by the files'
    fingerprint) of a JSONL / JSON / parquet / CSV file, a glob of them, a folder of shards of one format, or a
    `save_to_disk` folder. JSONL is checked for UTF-8 first (Arrow would take invalid UTF-8 without a word), once per
    file version; a file that fails it, or that Arrow cannot read (a line that is no JSON object), is read line by line
    instead: a bad line stops the run naming file and line (`bad_rows=error`), or is dropped (`skip`)."""
    from datasets import load_dataset, load_from_disk

    bad_rows = bad_rows or BadRows("error")
    if Path(path).is_dir() and (Path(path) / "dataset_info.json").exists():
        return load_from_disk(path)
    files = data_files(path)
    if all(f.stat().st_size == 0 for f in files):
        return []
    suffixes = {f.suffix for f in files}
    if len(suffixes) > 1:
        raise ValueError(f"data.path={path!r} mixes formats {sorted(suffixes)}: give files of one format")
    suffix = suffixes.pop()
    if suffix == ".jsonl" and not all(jsonl_is_clean(f) for f in files):
        return jsonl_rows(files, bad_rows)  # names or drops the bad lines
    try:
        return load_dataset(FILE_FORMATS[suffix], data_files=[str(f) for f in files], split="train")
    except Exception as err:  # datasets raises many kinds; the user needs the file's name
        if suffix == ".jsonl":  # e.g. a column that is a list in one row and a string in another: rows, then
            return jsonl_rows(files, bad_rows)
        raise ValueError(f"data.path={path!r} could not be read as {FILE_FORMATS[suffix]}: {err!r}") from err


def jsonl_is_clean(file: Path) -> bool:
    """The file is UTF-8 and every line that is not blank opens a JSON object: Arrow's JSON reader takes invalid UTF-8
    and a file of one JSON array without a word, while it refuses a malformed object (and the caller then reads the
    file line by line, naming the line). Decoded in large chunks at C speed, no line parsed here (a JSON parse of every
    line took ~15 s of a million-row start); remembered per file version (path, size, mtime) under the project's
    cache, so a second run does not read the file again."""
    import codecs

    from rlhf.models.resolve import cache_root

    stat = file.stat()
    key = hashlib.sha256(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    marker = cache_root() / "checked-jsonl" / key
    if marker.exists():
        return True
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(file, "rb") as f:
            while chunk := f.read(1 << 22):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    with open(file, "rb") as f:
        if any((line := raw.strip()) and not line.startswith(b"{") for raw in f):
            return False
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return True


def data_files(path: str) -> list[Path]:
    """The files `data.path` names: itself, the files of a glob, or the data files of a folder (sorted)."""
    if any(c in path for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(path) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"data.path={path!r} matches no file")
    elif Path(path).is_dir():
        files = sorted(p for p in Path(path).iterdir() if p.suffix in FILE_FORMATS and p.is_file())
        if not files:
            raise FileNotFoundError(f"data.path={path!r} is a folder without data files ({sorted(FILE_FORMATS)}) or a "
                                    "save_to_disk folder")
    elif Path(path).is_file():
        files = [Path(path)]
    else:
        raise FileNotFoundError(f"data.path={path!r} does not exist")
    for f in files:
        if f.suffix not in FILE_FORMATS:
            raise ValueError(f"data.path={str(f)!r}: unsupported format {f.suffix!r}; use one of {sorted(FILE_FORMATS)}")
    return files
