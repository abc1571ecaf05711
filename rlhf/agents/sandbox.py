"""Model-written Python runs here, never in the trainer's process: a separate process inside bubblewrap (Debian's
`bubblewrap` 0.8 or later, the sandbox Flatpak uses). What holds wherever bubblewrap runs (`available()`):
- no network (a network namespace of its own: only its own loopback);
- uid 65534 inside (a user namespace of its own, which cannot make further ones); it sees read-only system and Python
  folders and nothing else of the host (no home, no checkout, no /etc but /etc/alternatives);
- writable: only its working folder (/sandbox, holding main.py) and /tmp, each a tmpfs of `disk_mb`; the rest of its
  root, /dev and /dev/shm are read-only;
- limits on every process: CPU seconds, address space (`memory_mb`), file size, and at most `processes` processes and
  threads (RLIMIT_NPROC, counted in its own user namespace, so per sandbox);
- a wall clock (`wall_s`) that kills the whole sandbox, and its output cut at `output_bytes`.
Where this process may make a cgroup (v2 with the memory and pids controllers handed down, or v1's memory and pids
hierarchies: as root outside containers, often), memory (its tmpfs included) and processes are also limited for the
WHOLE sandbox, and everything in it is killed at the end. Where it may not (a user's session, most containers),
memory is limited per process only (`processes` x `memory_mb` of address space in all; shared memory no process maps
and kernel objects only by the time limits), and as root there is NO process limit: Linux does not apply RLIMIT_NPROC
to uid 0, which is what the sandbox's uid 65534 is outside. CPU is limited per process; the wall clock bounds the
whole. `configure` logs which case holds.
`python` is the tool. Where bubblewrap cannot run, it refuses unless `Limits.sandboxed` is False
(env.allow_unsandboxed_python=true), and then runs the code with what needs no bubblewrap: CPU, address space, file
size and wall-clock limits, a cgroup where there is one, an environment of its own; nothing else. That flag never
switches bubblewrap off where it runs.
"""

import functools
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Limits:
    cpu_s: float = 5.0  # CPU seconds of each process
    wall_s: float = 10.0  # the whole run
    memory_mb: int = 512  # the whole sandbox where a cgroup can be made, else each process
    output_bytes: int = 16384
    sandboxed: bool = True  # False: run WITHOUT bubblewrap where it cannot run (env.allow_unsandboxed_python)
    processes: int = 32  # processes and threads at once, the sandbox's own helpers (about 3) included
    disk_mb: int = 32  # its working folder and its /tmp, each (memory: they are tmpfs)


LIMITS = Limits()  # set once from the config by the episode runner (`configure`): tools take only their arguments


def configure(limits: Limits) -> None:
    global LIMITS
    LIMITS = limits
    if not available():
        log.warning("python tool: bubblewrap cannot run here; model-written code runs UNSANDBOXED (limits per process)")
    elif _cgroup_parents():
        log.info("python tool: sandboxed; memory and processes limited per sandbox by cgroups under %s",
                 ", ".join(folder for folder, _ in _cgroup_parents()))
    else:
        log.warning("python tool: sandboxed, but no cgroup can be made here: memory is limited per process only%s",
                    ", and there is no process limit (running as root)" if os.getuid() == 0 else "")


@functools.cache
def available() -> bool:
    """Whether the sandbox runs here (bubblewrap 0.8+ and prlimit installed, user namespaces allowed or root): checked
    once, by running an empty program in it."""
    if shutil.which("bwrap") is None or shutil.which("prlimit") is None:
        return False
    try:
        with tempfile.TemporaryDirectory(prefix="rlhf-sandbox-") as work:
            open(os.path.join(work, "main.py"), "w").close()
            return subprocess.run(_bwrap(work, Limits()), capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def python(code: str) -> str:
    """Run Python code and return what it prints (stdout and stderr). No network, no files outside its own folder.

    Args:
        code: The Python program to run.
    """
    return run_python(code, LIMITS)


def run_python(code: str, limits: Limits) -> str:
    sandboxed = available()  # where bubblewrap runs it is always used, whatever `limits.sandboxed` says
    if not sandboxed and limits.sandboxed:
        raise RuntimeError("the sandbox (bubblewrap) cannot run here, and env.allow_unsandboxed_python is false")
    with tempfile.TemporaryDirectory(prefix="rlhf-sandbox-") as work:
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        command = _bwrap(work, limits) if sandboxed else _unsandboxed(limits)
        cgroup = _make_cgroup(limits)
        try:
            # No preexec_fn (tools run in threads): `sh` waits until it is in the cgroup, then becomes the sandbox.
            process = subprocess.Popen(["sh", "-c", 'read go && exec "$@" </dev/null', "sh", *command], cwd=work,
                                       env=_ENV | {"HOME": work, "PATH": os.environ.get("PATH", _ENV["PATH"])},
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                for folder in cgroup:
                    _write(folder, "cgroup.procs", process.pid)
                process.stdin.write(b"go\n")
            finally:
                process.stdin.close()  # without "go" it exits instead
                output, ended = _read(process, limits)
        finally:
            _remove_cgroup(cgroup)
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


# Library thread pools start a thread per core at import (numpy's OpenBLAS): one each, or they eat the process limit.
_ENV = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _rlimits(limits: Limits) -> list[str]:
    """`prlimit` as a wrapper (limits every process below it inherits), instead of a preexec_fn."""
    cpu = max(1, int(limits.cpu_s))
    return ["prlimit", f"--cpu={cpu}:{cpu + 1}", f"--as={limits.memory_mb * 2**20}",
            f"--fsize={limits.disk_mb * 2**20}"]


def _bwrap(work: str, limits: Limits) -> list[str]:
    """Read-only system folders and the interpreter's own; main.py (read-only) in a sized tmpfs at /sandbox, a sized
    /tmp; every namespace of its own (network included), as uid 65534; it dies with its parent."""
    binds = []
    for folder in dict.fromkeys(["/usr", "/bin", "/lib", "/lib64", "/etc/alternatives", sys.base_prefix, sys.prefix]):
        if os.path.exists(folder):
            binds += ["--ro-bind", folder, folder]
    size = str(limits.disk_mb * 2**20)
    env = [arg for name, value in _ENV.items() for arg in ("--setenv", name, value)]
    return ["bwrap", *binds, "--size", size, "--tmpfs", "/sandbox", "--ro-bind", f"{work}/main.py", "/sandbox/main.py",
            "--size", size, "--tmpfs", "/tmp", "--dev", "/dev", "--remount-ro", "/dev", "--proc", "/proc",
            "--remount-ro", "/",  # the root bwrap builds is a tmpfs of no size limit: nothing may land there
            "--chdir", "/sandbox", "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
            "--disable-userns",  # a user namespace of its own could mount tmpfs of no size limit
            "--die-with-parent", "--new-session", "--clearenv", *env, "--setenv", "HOME", "/sandbox",
            # prlimit inside: RLIMIT_NPROC counts per user namespace, so only this sandbox's processes
            *_rlimits(limits), f"--nproc={limits.processes}", "--", sys.executable, "-I", "main.py"]


def _unsandboxed(limits: Limits) -> list[str]:
    """No process limit here: outside a user namespace of its own, RLIMIT_NPROC would count all of this user's."""
    return [*_rlimits(limits), "--", sys.executable, "-I", "main.py"]


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
        os.killpg(process.pid, signal.SIGKILL)  # bwrap; its pid namespace, and so all the sandbox, goes with it
    except ProcessLookupError:
        pass
    process.wait()
    process.stdout.close()
    return b"".join(chunks)[: limits.output_bytes].decode("utf-8", errors="replace"), ended


# cgroups: whole-sandbox limits, where this process may make them.

def _limit_files(kind: str, limits: Limits) -> dict[str, int]:
    memory = limits.memory_mb * 2**20
    return {"v2": {"memory.max": memory, "memory.swap.max": 0, "pids.max": limits.processes},
            "memory": {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory},  # cgroup v1
            "pids": {"pids.max": limits.processes}}[kind]


@functools.cache
def _cgroup_parents() -> list[tuple[str, str]]:
    """[(folder, kind)] under which one run's cgroups limit memory and processes: on cgroup v2 the nearest folder at or
    above this process's own cgroup that hands both controllers down (v2 lets no cgroup hold processes and hand
    controllers down, so it is usually a parent: its sandboxes leave this process's own cgroup, not that parent);
    on cgroup v1 its own cgroups of the memory and pids hierarchies. [] where none can be made (tried once)."""
    own = {}  # controller ("" on v2) -> this process's cgroup
    for line in _read_file("/proc/self/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        own.update(dict.fromkeys(controllers.split(","), path.rstrip("/")))
    choices = []
    for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):  # v2 alone, or v2 beside v1 ("hybrid")
        if "" in own and os.path.exists(f"{mount}/cgroup.controllers"):
            path = own[""]
            while not {"memory", "pids"} <= set(_read_file(f"{mount}{path}/cgroup.subtree_control").split()):
                if not path:
                    break
                path = os.path.dirname(path).rstrip("/")
            else:
                choices.append([(f"{mount}{path}", "v2")])
    if "memory" in own and "pids" in own:
        choices.append([(f"/sys/fs/cgroup/{c}{own[c]}", c) for c in ("memory", "pids")])
    for parents in choices:
        try:
            _remove_cgroup(_make_cgroup(Limits(), parents))
            return parents
        except OSError:
            continue
    return []


def _make_cgroup(limits: Limits, parents: list[tuple[str, str]] | None = None) -> list[str]:
    folders = []
    try:
        for parent, kind in _cgroup_parents() if parents is None else parents:
            folders.append(tempfile.mkdtemp(prefix="rlhf-sandbox-", dir=parent))
            for name, value in _limit_files(kind, limits).items():
                if os.path.exists(os.path.join(folders[-1], name)):  # the swap files exist only with swap accounting
                    _write(folders[-1], name, value)
    except OSError:
        _remove_cgroup(folders)
        raise
    return folders


def _remove_cgroup(folders: list[str]) -> None:
    """Kills whatever is left in them (bwrap's pid namespace takes a moment to go), then removes them."""
    for folder in folders:
        for _ in range(200):
            try:
                os.rmdir(folder)
                break
            except FileNotFoundError:
                break
            except OSError:  # EBUSY: processes left
                for pid in _read_file(os.path.join(folder, "cgroup.procs")).split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.01)
        else:
            log.warning("python tool: could not remove the cgroup %s", folder)


def _write(folder: str, name: str, value) -> None:
    with open(os.path.join(folder, name), "w") as f:
        f.write(str(value))


def _read_file(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
