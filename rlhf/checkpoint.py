"""Checkpoints of a whole run: `<dir>/step-000010/` holds `policy/` and `critic/` (DeepSpeed's format:
weights, optimizer, scheduler, RNG) and `driver.json` (data cursor, KL coefficient, running reward statistics,
wandb run id).

A checkpoint is written under a hidden temporary name and renamed once complete, so a crash during a save
leaves the earlier checkpoints usable, and only complete checkpoints match `step-*`. Its `manifest.json`
(each file's size and sha256), written last, is checked before a resume: a checkpoint damaged since (a
truncated file, a partial copy) is set aside as `damaged-step-*` and the one before it is used.
"""

import errno
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Callable

from rlhf.models.folders import write_atomically

log = logging.getLogger(__name__)
DRIVER_STATE = "driver.json"
MANIFEST = "manifest.json"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk); the earlier ones are as they were."""


def checkpoint_path(root: str | Path, step: int) -> Path:
    """`step-000010`; a warm start's steps are negative (`step--00003`: rlhf/sft/warm_start.py)."""
    return Path(root) / f"step-{step:06d}"


def step_of(path: Path) -> int:
    return int(path.name.removeprefix("step-"))


def complete_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / DRIVER_STATE).is_file()]
    return sorted(found, key=step_of)


def find_checkpoint(resume: str | None, root: str | Path) -> Path | None:
    """`resume`: None (start fresh), "auto" (the newest complete checkpoint under `root` whose files match its
    manifest, if any) or a path (refused if its files do not match)."""
    if resume is None:
        return None
    if resume == "auto":
        for path in reversed(complete_checkpoints(root)):
            problem = manifest_problem(path)
            if problem is None:
                return path
            aside = set_aside(path)
            log.warning("resume=auto: %s is damaged (%s); it is kept as %s and the checkpoint before it is used",
                        path, problem, aside.name)
        log.info("resume=auto: no checkpoint under %s, starting from step 0", root)
        return None
    path = Path(resume)
    if not (path / DRIVER_STATE).is_file():
        raise FileNotFoundError(f"resume={resume!r} is not a complete checkpoint (no {DRIVER_STATE} in it); "
                                f"pass a step-* folder or resume=auto")
    problem = manifest_problem(path)
    if problem is not None:
        raise ValueError(f"resume={resume!r} is damaged: {problem}; resume from an earlier step-* folder "
                         "(resume=auto falls back by itself)")
    return path


def write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    entries = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps(entries, indent=1))


def manifest_problem(folder: Path) -> str | None:
    """The first file of `folder` that does not match its manifest, said in words (None if all match)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        log.warning("%s has no %s (written by an earlier version): its files are not checked", folder, MANIFEST)
        return None
    try:
        entries = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return f"its {MANIFEST} is not valid JSON"
    for name, entry in entries.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != entry["bytes"]:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {entry['bytes']}"
        if sha256(file) != entry["sha256"]:
            return f"{name} does not match its sha256 in the manifest"
    return None


def sha256(file: Path) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint out of `step-*` (kept, never deleted)."""
    aside = path.with_name(f"damaged-{path.name}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"damaged-{path.name}.{n}")
    return path.rename(aside)


def check_no_later_checkpoints(root: str | Path, step: int) -> None:
    """Refuse to start where checkpoints past `step` exist: this run would overwrite or prune them."""
    later = [p.name for p in complete_checkpoints(root) if step_of(p) > step]
    if later:
        raise FileExistsError(f"{root} already holds checkpoints {later} of an earlier run; continue it with "
                              "resume=auto, or give this run another output_dir or checkpoint.dir")


def save_learners(actors, folder: Path) -> None:
    """Every rank of the policy and critic learners (`actors.launch.Actors`) writes its state into `folder`."""
    import ray

    learners = {"policy": actors.policy, "critic": actors.critic}
    ray.get([ref for name, group in learners.items() if group
             for ref in group.call("save_checkpoint", str(folder / name))])


def save_checkpoint(root: str | Path, step: int, write_learners: Callable[[Path], None], driver_state: dict,
                    keep_last: int, keep: str | None = None) -> Path:
    """Write the learners' states (through `write_learners(folder)`), the driver's and the manifest, then keep the
    newest `keep_last` checkpoints and the one named `keep` (the best by an eval metric). A full disk fails with
    CheckpointWriteError, the earlier checkpoints intact."""
    def write(tmp: Path) -> None:
        write_learners(tmp)
        (tmp / DRIVER_STATE).write_text(json.dumps(driver_state, indent=1))
        write_manifest(tmp)

    try:
        path = write_atomically(checkpoint_path(root, step), write)
    except Exception as err:
        if not out_of_space(err, root):
            raise
        earlier = [p.name for p in complete_checkpoints(root)]
        free = shutil.disk_usage(root).free / 2**30
        raise CheckpointWriteError(
            errno.ENOSPC, f"step {step}: the checkpoint could not be written to {root}: no space left on the device "
            f"({free:.2f} GiB free). The earlier checkpoints {earlier} are as they were; free space or set "
            "checkpoint.dir elsewhere, then rerun with resume=auto") from err
    prune_checkpoints(root, keep_last, keep)
    return path


def prune_checkpoints(root: str | Path, keep_last: int, keep: str | None = None) -> None:
    """Remove the complete checkpoints but the newest `keep_last` and the one named `keep`."""
    for old in complete_checkpoints(root)[:-keep_last]:
        if old.name != keep:
            shutil.rmtree(old)


# what torch's zip writer says when a write comes up short (a full disk among other causes): seen on these machines
TORCH_WRITE_FAILURES = ("file write failed", "iostream error", "unexpected pos")


def out_of_space(err: BaseException, root: str | Path) -> bool:
    """Whether a save failed for want of space: ENOSPC anywhere in the exception's chain (an actor's error arrives
    as its `cause`), or one of torch's bare write failures (TORCH_WRITE_FAILURES) with less left than the newest
    checkpoint's size."""
    seen, depth = err, 0
    while seen is not None and depth < 16:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC or "No space left on device" in str(seen):
            return True
        seen, depth = getattr(seen, "cause", None) or seen.__cause__ or seen.__context__, depth + 1
    if not any(message in str(err) for message in TORCH_WRITE_FAILURES):
        return False
    found = complete_checkpoints(root)
    needed = sum(p.stat().st_size for p in found[-1].rglob("*") if p.is_file()) if found else 2**30
    return shutil.disk_usage(root).free < needed


def read_driver_state(path: Path) -> dict:
    return json.loads((path / DRIVER_STATE).read_text())


def remove_unfinished(root: str | Path) -> None:
    """Temporary folders of saves that a crash interrupted (never a complete checkpoint)."""
    for tmp in Path(root).glob(".step-*"):
        shutil.rmtree(tmp, ignore_errors=True)
