"""Where prompt rows come from. Each source returns a list of dicts with the columns it has."""

from pathlib import Path

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


def file_rows(path: str) -> list[dict]:
    """Rows of a local JSONL / JSON / parquet / CSV file, read through `datasets`."""
    from datasets import load_dataset

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"data.path={path!r} does not exist")
    if file.suffix not in FILE_FORMATS:
        raise ValueError(f"data.path={path!r}: unsupported format {file.suffix!r}; use one of {sorted(FILE_FORMATS)}")
    if file.stat().st_size == 0:
        return []
    try:
        dataset = load_dataset(FILE_FORMATS[file.suffix], data_files=str(file), split="train")
    except Exception as err:  # datasets raises many kinds; the user needs the file's name
        raise ValueError(f"data.path={path!r} could not be read as {FILE_FORMATS[file.suffix]}: {err!r}") from err
    return list(dataset)
