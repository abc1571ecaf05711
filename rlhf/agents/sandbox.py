"""Model-written Python runs here, never in the trainer's process: a separate process inside bubblewrap (Debian's
`bubblewrap`, the sandbox Flatpak uses), with no network (a network namespace of its own), a throwaway working
folder (the only writable place besides its own /tmp, both gone afterwards), read-only system and Python folders
and nothing else of the host (no home, no checkout), CPU-time, memory and file-size limits, a wall-clock limit,
and its output cut at a size. `python` is the tool; `available()` says whether the sandbox can run here, and the
episode runner refuses the tool where it cannot unless `env.allow_unsandboxed_python=true`.
"""

import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass
class Limits:
    cpu_s: float = 5.0
    wall_s: float = 10.0
    memory_mb: int = 512
    output_bytes: int = 16384
    sandboxed: bool = True  # False only when the user opted out (env.allow_unsandboxed_python)


LIMITS = Limits()  # set once from the config by the episode runner (`configure`): tools take only their arguments


def configure(limits: Limits) -> None:
    global LIMITS
    LIMITS = limits


def available() -> bool:
    """Whether bubblewrap can make its namespaces here (it needs unprivileged user namespaces, or root)."""
    if shutil.which("bwrap") is None:
        return False
    try:
        return subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def python(code: str) -> str:
    """Run Python code and return what it prints (stdout and stderr). No network, no files outside its own folder.

    Args:
        code: The Python program to run.
    """
    return run_python(code, LIMITS)


def run_python(code: str, limits: Limits) -> str:
    with tempfile.TemporaryDirectory(prefix="rlhf-sandbox-") as work:
        with open(os.path.join(work, "main.py"), "w") as f:
            f.write(code)
        interpreter = [sys.executable, "-I", "main.py"]
        command = _bwrap(work) + interpreter if limits.sandboxed else interpreter
        process = subprocess.Popen(command, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lambda: _limit(limits))
        output, ended = _read(process, limits)
    if ended == "output":
        output += f"\n[output cut at {limits.output_bytes} bytes]"
    elif ended == "wall":
        output += f"\n[stopped after {limits.wall_s:g} s]"
    elif process.returncode < 0 or process.returncode > 128:  # bwrap reports its child's signal as 128 + n
        signal_number = -process.returncode if process.returncode < 0 else process.returncode - 128
        output += f"\n[killed by signal {signal_number}: over the CPU ({limits.cpu_s:g} s) or memory " \
                  f"({limits.memory_mb} MB) limit]"
    elif process.returncode:
        output += f"\n[exit status {process.returncode}]"
    return output


def _bwrap(work: str) -> list[str]:
    """Read-only system folders and the interpreter's own, the work folder writable at /sandbox, fresh /tmp, /dev
    and /proc, every namespace of its own (network included); it dies with its parent."""
    binds = []
    for folder in dict.fromkeys(["/usr", "/bin", "/lib", "/lib64", "/etc/alternatives", sys.base_prefix, sys.prefix]):
        if os.path.exists(folder):
            binds += ["--ro-bind", folder, folder]
    return ["bwrap", *binds, "--bind", work, "/sandbox", "--chdir", "/sandbox", "--tmpfs", "/tmp", "--dev", "/dev",
            "--proc", "/proc", "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/sandbox"]


def _limit(limits: Limits) -> None:
    """In the child before it becomes bwrap: limits that every process below it inherits."""
    cpu = max(1, int(limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = limits.memory_mb * 1024**2
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes * 4, limits.output_bytes * 4))


def _read(process: subprocess.Popen, limits: Limits) -> tuple[str, str]:
    """The process's output up to `output_bytes`, and why reading stopped: "exit", "output" or "wall". Whatever is
    left of its process group is killed."""
    deadline, chunks, size, ended = time.monotonic() + limits.wall_s, [], 0, "exit"
    fd = process.stdout.fileno()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            ended = "wall"
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limits.output_bytes:
            ended = "output"
            break
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the sandbox and anything it started
    except ProcessLookupError:
        pass
    process.wait()
    process.stdout.close()
    return b"".join(chunks)[: limits.output_bytes].decode("utf-8", errors="replace"), ended
