from actors.launch import _threads
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
