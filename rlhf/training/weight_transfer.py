"""Moving full weights between processes on GPUs: an NCCL group shared by learner rank 0 and the engines,
and CUDA IPC handles. UNTESTED: this project's machines have no GPU (the CPU route goes through files)."""

import torch


def join_nccl_group(host: str, port: int, rank: int, world: int):
    """A communicator outside torch.distributed's default group (the learner's DeepSpeed group is separate)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world)
    return PyNcclCommunicator(group, device=torch.cuda.current_device())


def metadata(state: dict[str, torch.Tensor]) -> list[tuple[str, str, tuple]]:
    return [(name, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for name, t in state.items()]


def send(communicator, state: dict[str, torch.Tensor]) -> None:
    for tensor in state.values():
        communicator.broadcast(tensor.cuda(), src=0)
    torch.cuda.synchronize()


def receive(communicator, meta: list[tuple[str, str, tuple]]) -> list[tuple[str, torch.Tensor]]:
    weights = []
    for name, dtype, shape in meta:
        tensor = torch.empty(shape, dtype=getattr(torch, dtype), device="cuda")
        communicator.broadcast(tensor, src=0)
        weights.append((name, tensor))
    torch.cuda.synchronize()
    return weights


def ipc_handles(state: dict[str, torch.Tensor]) -> dict:
    from torch.multiprocessing.reductions import reduce_tensor

    return {name: reduce_tensor(t.cuda().contiguous()) for name, t in state.items()}


def from_ipc_handles(handles: dict) -> list[tuple[str, torch.Tensor]]:
    return [(name, rebuild(*args)) for name, (rebuild, args) in handles.items()]
