"""Which weight-sync route a run gets, from where its learner and engines compute."""

import pytest

from actors.weight_sync import pick_route


def on_cpu(gpu_ids=(), node="n1"):
    return {"device": "cpu", "gpu_uuid": None, "gpu_ids": list(gpu_ids), "num_gpus": 0.3 if gpu_ids else 0.0,
            "node": node}


def on_gpu(uuid, node="n1"):
    return {"device": "cuda:0", "gpu_uuid": uuid, "gpu_ids": ["0"], "num_gpus": 0.3, "node": node}


def test_auto_takes_cuda_ipc_only_when_every_engine_is_on_the_learners_gpu():
    assert pick_route("auto", on_gpu("GPU-a"), [on_gpu("GPU-a"), on_gpu("GPU-a")]) == "cuda_ipc"
    assert pick_route("auto", on_gpu("GPU-a"), [on_gpu("GPU-a"), on_gpu("GPU-b")]) == "shm"
    assert pick_route("auto", on_cpu(["0"]), [on_cpu(["0"])]) == "shm"  # GPUs declared to Ray, none usable
    assert pick_route("shm", on_gpu("GPU-a"), [on_gpu("GPU-a")]) == "shm"


def test_auto_needs_no_shared_folder_when_an_engine_is_on_another_node():
    assert pick_route("auto", on_cpu(), [on_cpu(), on_cpu(node="n2")]) == "object_store"
    assert pick_route("auto", on_gpu("GPU-a"), [on_gpu("GPU-b", node="n2")]) == "object_store"
    assert pick_route("shm", on_cpu(), [on_cpu(node="n2")]) == "shm"  # asked for: a shared file system, then


def test_cuda_ipc_refuses_actors_off_the_learners_gpu_naming_them():
    with pytest.raises(RuntimeError, match=r"policy rank 0 on GPU GPU-a; rollout engine 0 on GPU GPU-a; "
                                           r"rollout engine 1 on the CPU \(Ray GPU ids none\)"):
        pick_route("cuda_ipc", on_gpu("GPU-a"), [on_gpu("GPU-a"), on_cpu()])


def test_nccl_refuses_actors_on_the_cpu():
    with pytest.raises(RuntimeError, match=r"needs GPUs, but policy rank 0, rollout engine 0 compute on the CPU"):
        pick_route("nccl", on_cpu(["0"]), [on_cpu()])
    assert pick_route("nccl", on_gpu("GPU-a"), [on_gpu("GPU-b")]) == "nccl"


def test_pushes_from_two_threads_run_one_at_a_time():
    # one-step-off-policy: a retried background rollout pushes while the loop pushes too
    import threading
    import time

    from actors.weight_sync import WeightSyncRoute

    class RecordingRoute(WeightSyncRoute):
        name = "recording"

        def __init__(self):
            super().__init__(policy=None, rollouts=[], timeout_s=1.0, drain_timeout_s=1.0)
            self.spans = []

        def transfer(self):
            began = time.monotonic()
            self.version += 1
            time.sleep(0.2)  # a push's gather and reloads
            self.spans.append((began, time.monotonic()))

    route = RecordingRoute()
    threads = [threading.Thread(target=route.push) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans = sorted(route.spans)
    assert route.version == 3 and len(spans) == 3
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:]))  # never two at once


def test_tensor_parallel_engines_on_another_node_get_the_weights_through_the_object_store():
    # /dev/shm is node-local: a folder written beside the learner cannot be read on the engine's node (tensor-parallel
    # engines were given shm whatever their node); the engine's actor stages the object in its own node's memory
    assert pick_route("auto", on_cpu(), [on_cpu(node="n2")], tensor_parallel_size=2) == "object_store"
    assert pick_route("auto", on_cpu(), [on_cpu()], tensor_parallel_size=2) == "shm"
    # an engine spanning GPUs is never only on the learner's one: no CUDA IPC
    assert pick_route("auto", on_gpu("GPU-a"), [on_gpu("GPU-a")], tensor_parallel_size=2) == "shm"
