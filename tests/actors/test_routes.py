import pytest

from actors.weight_sync import SharedMemoryRoute, make_route


@pytest.mark.parametrize("kind", ["nccl", "cuda_ipc"])
def test_gpu_routes_refuse_to_start_without_a_gpu(kind):
    with pytest.raises(RuntimeError, match=f"rollout.weight_sync={kind} needs GPUs"):
        make_route(kind, policy=None, rollouts=[], sync_dir="/dev/shm/unused", overlap=False)


def test_the_cpu_route_is_the_default_kind():
    route = make_route("shm", policy=None, rollouts=[], sync_dir="/dev/shm/unused", overlap=True)
    assert isinstance(route, SharedMemoryRoute) and route.overlap
