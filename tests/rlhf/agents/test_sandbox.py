"""Model-written Python in its sandbox (bubblewrap): it cannot write outside its folder, reach the network or
outlive its limits; its folders, processes and memory are bounded; the unsandboxed opt-out never switches it off."""

import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from rlhf.agents import sandbox
from rlhf.agents.sandbox import Limits, run_python

LIMITS = Limits(cpu_s=2, wall_s=4, memory_mb=256, output_bytes=2048)  # processes and disk_mb: the defaults (32)
REPO = Path(__file__).resolve().parents[3]


def test_the_sandbox_is_available_here():
    assert sandbox.available()  # scripts/install.sh installs bubblewrap


def test_code_runs_and_writes_only_in_its_own_folder(tmp_path):
    assert run_python("print(6 * 7)", LIMITS).strip() == "42"
    assert run_python("open('note.txt', 'w').write('x'); print(open('note.txt').read())", LIMITS).strip() == "x"
    outside = tmp_path / "escaped.txt"
    output = run_python(f"open({str(outside)!r}, 'w').write('x')", LIMITS)
    assert "Error" in output and not outside.exists()  # the host's folders are not even there
    assert "True" not in run_python("import os; print(os.path.exists('/work'), os.path.exists('/home'))", LIMITS)


def test_code_cannot_write_anywhere_else_and_is_not_root():
    targets = ["/etc/x", "/home/x", "/x", "/dev/x", "/dev/shm/x", "/usr/x", f"{sys.prefix}/x", f"{REPO}/x"]
    # a file there already was left by something run outside the sandbox: named as such, not blamed on the sandbox
    assert not [path for path in targets if os.path.exists(path)], "files left on the host before this test ran"
    output = run_python(f"""
import os
print('uid', os.getuid(), os.getgid())
for path in {targets!r}:
    try:
        open(path, 'w').write('x')
        print('WROTE', path)
    except OSError as err:
        print('refused', path, err.strerror)
""", LIMITS)
    assert "uid 65534 65534" in output  # nobody, not root
    assert "WROTE" not in output and output.count("refused") == len(targets), output
    assert not any(os.path.exists(path) for path in targets)  # the host's folders are untouched


def test_its_folders_are_small():
    """5000 files of 8 KB (40 MB) fit neither in its folder nor in its /tmp (tmpfs of 32 MB each): the run reports
    no space, the host keeps nothing of it, and /dev/shm is read-only."""
    started = time.monotonic()
    output = run_python("""
for folder in ['.', '/tmp', '/dev/shm']:
    written = 0
    try:
        for written in range(5000):
            with open(f'{folder}/{written}.bin', 'wb') as f:
                f.write(b'x' * 8192)
        print(folder, 'took all 5000')
    except OSError as err:
        print(folder, 'stopped at', written, err.strerror)
""", Limits(cpu_s=4, wall_s=8, memory_mb=256, output_bytes=2048))
    assert "took all" not in output and output.count("No space left on device") == 2, output
    assert "/dev/shm stopped at 0 Read-only file system" in output
    assert time.monotonic() - started < 8
    assert not [p for p in Path(tempfile.gettempdir()).iterdir() if p.name.startswith("rlhf-sandbox-")]


def test_it_cannot_start_many_processes():
    """200 `sleep` children: the process limit (32, its helpers included) stops it; a few children are fine, and two
    sandboxes at once each have their own count."""
    code = """
import subprocess
assert subprocess.run(['true']).returncode == 0
started = 0
try:
    for started in range(200):
        subprocess.Popen(['sleep', '5'])
    print('started all 200')
except OSError as err:
    print('stopped at', started, err.strerror)
"""
    outputs = [None, None]

    def run(i):
        outputs[i] = run_python(code, LIMITS)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 4
    for output in outputs:
        assert "started all" not in output and "Resource temporarily unavailable" in output, output
        assert 20 <= int(output.split("stopped at ")[1].split()[0]) < 32  # each its own 32, less its helpers


@pytest.mark.skipif(not sandbox._cgroup_parents(), reason="no cgroup can be made here: memory is limited per process")
def test_memory_is_limited_for_the_whole_sandbox():
    """Three processes of 150 MB each, one after the other: each is under the 256 MB limit, together they are not."""
    output = run_python("""
import subprocess, sys
hold = "import time; b = b'x' * (150 * 2**20); print('held', flush=True); time.sleep(30)"
children = []
for _ in range(3):
    children.append(subprocess.Popen([sys.executable, '-c', hold], stdout=subprocess.PIPE))
    children[-1].stdout.readline()  # once it holds its 150 MB, or is gone
for child in children:
    child.terminate()  # those still alive: -15; those the cgroup's OOM killer took: -9
print('exits', [child.wait() for child in children])
""", Limits(cpu_s=4, wall_s=10, memory_mb=256, output_bytes=2048))
    assert "exits" in output and "-9" in output.split("exits")[1], output


def test_without_a_cgroup_every_process_still_has_its_limits(monkeypatch):
    """The fallback where no cgroup can be made: per-process rlimits inside, the folders still sized."""
    monkeypatch.setattr(sandbox, "_cgroup_parents", list)  # none
    output = run_python("print(open('/proc/self/limits').read())", Limits(cpu_s=2, memory_mb=256, processes=20))
    limits = {line[:26].strip(): line[26:].split() for line in output.splitlines()[1:] if line.strip()}
    assert limits["Max processes"][:2] == ["20", "20"]
    assert limits["Max address space"][:2] == [str(256 * 2**20)] * 2
    assert limits["Max cpu time"][:2] == ["2", "3"]
    output = run_python("open('big', 'wb').write(b'x' * 40 * 2**20)", LIMITS)
    assert "File too large" in output or "No space left" in output or "killed by signal 25" in output, output
    if os.getuid() != 0:  # Linux exempts uid 0 from RLIMIT_NPROC: as root only a cgroup limits processes
        output = run_python("import subprocess\nfor _ in range(200): subprocess.Popen(['sleep', '5'])", LIMITS)
        assert "Resource temporarily unavailable" in output


def test_code_cannot_reach_the_network():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the host can
    output = run_python(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CON' + 'NECTED')",
                        LIMITS)
    server.close()
    assert "CONNECTED" not in output and "ConnectionRefusedError" in output  # its own loopback holds nothing
    output = run_python("import socket; socket.create_connection(('192.0.2.1', 80), timeout=2)", LIMITS)
    assert "Network is unreachable" in output  # no route out at all


def test_the_unsandboxed_opt_out_does_not_switch_bubblewrap_off(tmp_path):
    """env.allow_unsandboxed_python=true (sandboxed=False) with bubblewrap here: still in the sandbox."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    opted_out = Limits(cpu_s=2, wall_s=4, memory_mb=256, output_bytes=2048, sandboxed=False)
    output = run_python(f"""
import os, socket
print('uid', os.getuid())
print('sees', [p for p in [{str(secret)!r}, {str(REPO)!r}, '/home', '/etc/passwd'] if os.path.exists(p)])
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=2)
    print('CON' + 'NECTED')
except OSError as err:
    print('no network', err.strerror)
""", opted_out)
    server.close()
    assert "uid 65534" in output and "sees []" in output and "no network" in output, output


def test_where_bubblewrap_cannot_run_the_opt_out_runs_the_code_with_limits_only(monkeypatch):
    monkeypatch.setattr(sandbox, "available", lambda: False)
    with pytest.raises(RuntimeError, match="cannot run here"):
        run_python("print(1)", LIMITS)
    opted_out = Limits(cpu_s=2, wall_s=4, memory_mb=256, output_bytes=2048, sandboxed=False)
    assert run_python("print(6 * 7)", opted_out).strip() == "42"
    assert "MemoryError" in run_python("b = bytearray(1024 ** 3)", opted_out)
    assert "killed by signal" in run_python("while True: pass", Limits(cpu_s=1, wall_s=10, sandboxed=False))
    assert "WANDB_MODE" not in run_python("import os; print(sorted(os.environ))", opted_out)  # not the trainer's env


def test_code_cannot_outlive_its_limits():
    started = time.monotonic()  # 1 CPU second well within 10 s of wall clock, even on a busy machine
    output = run_python("while True: pass", Limits(cpu_s=1, wall_s=10, memory_mb=256, output_bytes=2048))
    assert "killed by signal" in output and time.monotonic() - started < 10
    output = run_python("import time; open('alive', 'w'); time.sleep(60)", LIMITS)
    assert "stopped after 4 s" in output
    assert not [p for p in psutil.process_iter(["cmdline"]) if "main.py" in (p.info["cmdline"] or [])
                and "-I" in (p.info["cmdline"] or [])]  # nothing of it runs on
    assert run_python("print('x' * 100000)", LIMITS).endswith("[output cut at 2048 bytes]")
    assert "MemoryError" in run_python("b = bytearray(1024 ** 3)", LIMITS)


def test_the_python_tool_is_refused_without_a_sandbox_unless_the_user_opts_out(monkeypatch):
    from rlhf.agents.episodes import check_sandbox  # here: the other tests need not import the episode runner

    monkeypatch.setattr(sandbox, "available", lambda: False)
    with pytest.raises(ValueError, match="cannot run here; install it, or set env.allow_unsandboxed_python=true"):
        check_sandbox(allow_unsandboxed=False)
    check_sandbox(allow_unsandboxed=True)
