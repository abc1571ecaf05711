"""The pre-flight's fit check: host memory per node, GPU memory per GPU."""

from rlhf.training.memory import check_fit


def row(role, node="n1", peak=1.0, gpu=None, need=0.0):
    r = {"role": role, "node": node, "peak_gib": peak, "node_gib": 16.0}
    if gpu:
        r.update({"gpu_uuid": gpu, "gpu_name": "H200", "gpu_total_gib": 80.0, "gpu_need_gib": need})
    return r


def test_roles_sharing_a_gpu_that_fit_pass():
    assert check_fit([row("rollout", gpu="GPU-a", need=30), row("policy rank 0", gpu="GPU-a", need=40)], 0.9) == []


def test_a_gpu_that_would_overflow_names_each_roles_share():
    problems = check_fit([row("rollout", gpu="GPU-a", need=40), row("policy rank 0", gpu="GPU-a", need=36),
                          row("reference", gpu="GPU-b", need=10), row("driver")], 0.9)
    assert len(problems) == 1  # GPU-b and the node are fine
    assert "GPU GPU-a (H200)" in problems[0] and "76.00 GiB" in problems[0] and "72.00 GiB is usable" in problems[0]
    assert "rollout 40.00 GiB (50%)" in problems[0] and "policy rank 0 36.00 GiB (45%)" in problems[0]


def test_host_memory_is_still_checked_per_node():
    problems = check_fit([row("rollout", peak=10), row("policy rank 0", peak=6), row("reward", node="n2")], 0.9)
    assert len(problems) == 1 and problems[0].startswith("node n1") and "16.00 GiB" in problems[0]
