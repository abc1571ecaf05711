"""Names of the shm route's weight folders, and removing those a killed run left behind.

A run's folder is `rlhf-weights-<host>-<boot id>-<pid>-<time>` in `rollout.sync_dir` (the driver's host, boot and
process). A run killed with SIGKILL cannot remove it (about 600 MB of shared memory on the default model); the next
run on that host removes every such folder whose process is gone. A folder of another host or another boot (a
shared `sync_dir`, a reboot's leftovers on disk) is never touched: its process cannot be checked from here.
"""

import logging
import os
import shutil
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)
PREFIX = "rlhf-weights-"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def owner() -> str:
    """This process as a folder-name part: no '-' inside the host name, which separates the parts."""
    return f"{socket.gethostname().replace('-', '_')}-{boot_id()}-{os.getpid()}"


def new_folder(sync_dir: str) -> str:
    return os.path.join(sync_dir, f"{PREFIX}{owner()}-{time.time_ns()}")


def remove_orphans(sync_dir: str) -> list[str]:
    """Remove this host's weight folders whose process has ended; returns their names."""
    host, boot = socket.gethostname().replace("-", "_"), boot_id()
    removed = []
    try:
        entries = list(Path(sync_dir).iterdir())
    except OSError:
        return removed
    for path in entries:
        parts = path.name.removeprefix(PREFIX).split("-")
        if not path.name.startswith(PREFIX) or len(parts) < 8:  # host, 5 boot id parts, pid, time
            continue
        folder_host, folder_boot, pid = parts[0], "-".join(parts[1:6]), parts[6]
        if folder_host != host or folder_boot != boot or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    if removed:
        log.warning("removed %d weight folder(s) of ended runs from %s: %s", len(removed), sync_dir, ", ".join(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
