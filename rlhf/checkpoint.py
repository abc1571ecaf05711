"""Checkpoints of a whole run: `<dir>/step-000010/` holds `policy/` and `critic/` (DeepSpeed's format:
weights, optimizer, scheduler, RNG) and `driver.json` (data cursor, KL coefficient, running reward statistics,
wandb run id).

A checkpoint is written under a hidden temporary name and renamed once complete, so a crash during a save
leaves the earlier checkpoints usable, and only complete checkpoints match `step-*`.
"""

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

from rlhf.models.folders import write_atomically

log = logging.getLogger(__name__)
DRIVER_STATE = "driver.json"


def checkpoint_path(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{step:06d}"


def complete_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / DRIVER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def find_checkpoint(resume: str | None, root: str | Path) -> Path | None:
    """`resume`: None (start fresh), "auto" (the newest complete checkpoint under `root`, if any) or a path."""
    if resume is None:
        return None
    if resume == "auto":
        found = complete_checkpoints(root)
        if not found:
            log.info("resume=auto: no checkpoint under %s, starting from step 0", root)
            return None
        return found[-1]
    path = Path(resume)
    if not (path / DRIVER_STATE).is_file():
        raise FileNotFoundError(f"resume={resume!r} is not a complete checkpoint (no {DRIVER_STATE} in it); "
                                f"pass a step-* folder or resume=auto")
    return path


def check_no_later_checkpoints(root: str | Path, step: int) -> None:
    """Refuse to start where checkpoints past `step` exist: this run would overwrite or prune them."""
    later = [p.name for p in complete_checkpoints(root) if int(p.name.split("-")[1]) > step]
    if later:
        raise FileExistsError(f"{root} already holds checkpoints {later} of an earlier run; continue it with "
                              "resume=auto, or give this run another output_dir or checkpoint.dir")


def save_checkpoint(root: str | Path, step: int, write_learners: Callable[[Path], None], driver_state: dict,
                    keep_last: int) -> Path:
    """Write the learners' states (through `write_learners(folder)`) and the driver's, then keep the newest
    `keep_last` checkpoints."""
    def write(tmp: Path) -> None:
        write_learners(tmp)
        (tmp / DRIVER_STATE).write_text(json.dumps(driver_state, indent=1))

    path = write_atomically(checkpoint_path(root, step), write)
    for old in complete_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old)
    return path


def read_driver_state(path: Path) -> dict:
    return json.loads((path / DRIVER_STATE).read_text())


def remove_unfinished(root: str | Path) -> None:
    """Temporary folders of saves that a crash interrupted (never a complete checkpoint)."""
    for tmp in Path(root).glob(".step-*"):
        shutil.rmtree(tmp, ignore_errors=True)
