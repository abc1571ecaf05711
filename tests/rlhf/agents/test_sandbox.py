"""Model-written Python in its sandbox (bubblewrap): it cannot write outside its folder, reach the network or
outlive its limits."""

import socket
import threading
import time

import psutil
import pytest

from rlhf.agents import sandbox
from rlhf.agents.episodes import check_sandbox
from rlhf.agents.sandbox import Limits, run_python

LIMITS = Limits(cpu_s=2, wall_s=4, memory_mb=256, output_bytes=2048)


def test_the_sandbox_is_available_here():
    assert sandbox.available()  # scripts/install.sh installs bubblewrap


def test_code_runs_and_writes_only_in_its_own_folder(tmp_path):
    assert run_python("print(6 * 7)", LIMITS).strip() == "42"
    assert run_python("open('note.txt', 'w').write('x'); print(open('note.txt').read())", LIMITS).strip() == "x"
    outside = tmp_path / "escaped.txt"
    output = run_python(f"open({str(outside)!r}, 'w').write('x')", LIMITS)
    assert "Error" in output and not outside.exists()  # the host's folders are not even there
    assert "True" not in run_python("import os; print(os.path.exists('/work'), os.path.exists('/home'))", LIMITS)


def test_code_cannot_reach_the_network():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept(), daemon=True).start()
    socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the host can
    output = run_python(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CON' + 'NECTED')",
                        LIMITS)
    server.close()
    assert "CONNECTED" not in output and "ConnectionRefusedError" in output  # its own loopback holds nothing


def test_code_cannot_outlive_its_limits():
    started = time.monotonic()
    output = run_python("while True: pass", LIMITS)
    assert "killed by signal" in output and time.monotonic() - started < 4
    output = run_python("import time; open('alive', 'w'); time.sleep(60)", LIMITS)
    assert "stopped after 4 s" in output
    assert not [p for p in psutil.process_iter(["cmdline"]) if "main.py" in (p.info["cmdline"] or [])
                and "-I" in (p.info["cmdline"] or [])]  # nothing of it runs on
    assert run_python("print('x' * 100000)", LIMITS).endswith("[output cut at 2048 bytes]")
    assert "MemoryError" in run_python("b = bytearray(1024 ** 3)", LIMITS)


def test_the_python_tool_is_refused_without_a_sandbox_unless_the_user_opts_out(monkeypatch):
    monkeypatch.setattr(sandbox, "available", lambda: False)
    with pytest.raises(ValueError, match="cannot run here; install it, or set env.allow_unsandboxed_python=true"):
        check_sandbox(allow_unsandboxed=False)
    check_sandbox(allow_unsandboxed=True)
