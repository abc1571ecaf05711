import os
import subprocess
import sys

from actors.launch import KEEP_FREED_MEMORY_ENV, _threads, keeps_freed_memory
from rlhf.config import compose_config, load_config


def thread_env(*overrides: str) -> dict[str, str]:
    return _threads(2, load_config(compose_config("output_dir=/tmp/x", *overrides)))


def test_threads_sleep_when_idle_only_while_roles_overlap():
    assert thread_env()["OMP_NUM_THREADS"] == "2"
    assert "OMP_WAIT_POLICY" not in thread_env()  # one role at a time: OpenMP's own spin-then-sleep
    assert thread_env("rollout.mode=one_step_off", "algo/correction=tis")["OMP_WAIT_POLICY"] == "PASSIVE"
    assert thread_env("omp_wait_policy=active")["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "OMP_WAIT_POLICY" not in thread_env("omp_wait_policy=default", "rollout.mode=one_step_off",
                                               "algo/correction=tis")


def test_cpu_learners_keep_the_memory_they_free_when_asked():
    kept = load_config(compose_config("output_dir=/tmp/x", "keep_freed_memory=true"))
    assert keeps_freed_memory(kept, "policy") and keeps_freed_memory(kept, "reference")
    assert not keeps_freed_memory(kept, "rollout")  # vLLM allocates its own way
    assert not keeps_freed_memory(load_config(compose_config("output_dir=/tmp/x")), "policy")


RESIDENT_AFTER_FREE = """
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(256 << 20)
ctypes.memset(block, 1, 256 << 20)  # touched: resident
libc.free(ctypes.c_void_p(block))
print(int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20)
"""


def test_the_kept_memory_setting_keeps_a_freed_block_resident():
    """glibc reads KEEP_FREED_MEMORY_ENV at start-up: a freed 256 MiB block stays in the process instead of going
    back to the kernel (where, on a VM reporting free pages, faulting it in again grew dear)."""
    def resident_mib(extra_env):
        env = {**os.environ, **extra_env}
        return int(subprocess.run([sys.executable, "-c", RESIDENT_AFTER_FREE], env=env, capture_output=True,
                                  text=True, check=True).stdout)

    assert resident_mib({}) < 200  # given back at once
    assert resident_mib(KEEP_FREED_MEMORY_ENV) > 256
