"""Moving full weights between processes on GPUs.

CUDA IPC (learner and engine on the same GPU): the learner copies its weights, bucket by bucket, into one uint8
CUDA buffer and exports it as an IPC handle; the engine maps that buffer (no copy through the host) and loads the
tensors from views of it. The wire format is vLLM's IPC weight-transfer format ("packed" mode), so a vLLM engine
loads a bucket through its own weight-transfer engine, and the HF engine decodes the same dict here:
`{names, dtype_names, shapes, tensor_sizes, ipc_handles: {GPU UUID: handle}}`, the tensors back to back.

NCCL (engines on other GPUs; UNTESTED: it needs two GPUs): one communicator shared by learner rank 0 and the
engines, made and used in vLLM's packed NCCL format, so a vLLM engine receives through its own NCCL weight-transfer
engine; one broadcast per bucket.
"""

import torch


def to_arrays(state: dict[str, torch.Tensor]) -> dict:
    """The state as numpy arrays (bf16 as its raw 16 bits) for Ray's object store: Ray writes numpy arrays with one
    copy and reads them in place, where torch tensors are pickled (0.8 s to put 540 MB, 0.2 s as arrays)."""
    arrays = {name: (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).detach().cpu().numpy()
              for name, t in state.items()}
    return {"arrays": arrays, "dtypes": {name: str(t.dtype).removeprefix("torch.") for name, t in state.items()}}


def from_arrays(exported: dict) -> dict[str, torch.Tensor]:
    """Tensors over the arrays `to_arrays` made (no copy: views of the object store's read-only memory)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memory: the loaders copy out of it
        return {name: torch.from_numpy(array).view(getattr(torch, exported["dtypes"][name]))
                for name, array in exported["arrays"].items()}


def device_uuid(device: torch.device) -> str:
    return str(torch.cuda.get_device_properties(device).uuid)


def plan_buckets(state: dict[str, torch.Tensor], bucket_bytes: int) -> list[list[str]]:
    """Names of the tensors in each bucket, in state order; a tensor larger than a bucket gets a bucket of its own."""
    buckets, current, size = [], [], 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > bucket_bytes:
            buckets.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    return buckets + ([current] if current else [])


def pack(state: dict[str, torch.Tensor], names: list[str], buffer: torch.Tensor) -> dict:
    """Copy the named tensors into `buffer` back to back; returns the bucket's metadata (vLLM's field names)."""
    sizes, offset = [], 0
    for name in names:
        flat = state[name].contiguous().reshape(-1).view(torch.uint8)
        buffer[offset : offset + flat.numel()].copy_(flat)
        sizes.append(flat.numel())
        offset += flat.numel()
    return {"names": list(names), "dtype_names": [str(state[n].dtype).removeprefix("torch.") for n in names],
            "shapes": [list(state[n].shape) for n in names], "tensor_sizes": sizes}


def unpack(buffer: torch.Tensor, bucket: dict) -> list[tuple[str, torch.Tensor]]:
    """Views of `buffer` as the bucket's named tensors (valid while the buffer is)."""
    views = buffer[: sum(bucket["tensor_sizes"])].split(bucket["tensor_sizes"])
    return [(name, view.view(getattr(torch, dtype)).view(shape))
            for name, dtype, shape, view in zip(bucket["names"], bucket["dtype_names"], bucket["shapes"], views)]


class BucketSender:
    """Learner rank 0's side of one CUDA-IPC push: the gathered weights, the bucket plan and one IPC buffer that
    every bucket reuses (the route waits for every engine to load a bucket before asking for the next)."""

    def __init__(self, state: dict[str, torch.Tensor], bucket_bytes: int):
        self.state, self.buckets = state, plan_buckets(state, bucket_bytes)
        device = next(iter(state.values())).device
        largest = max(sum(state[n].numel() * state[n].element_size() for n in b) for b in self.buckets)
        self.buffer = torch.empty(largest, dtype=torch.uint8, device=device)
        self.uuid = device_uuid(device)

    def bucket(self, index: int) -> dict:
        from torch.multiprocessing.reductions import reduce_tensor

        bucket = pack(self.state, self.buckets[index], self.buffer)
        torch.cuda.current_stream().synchronize()  # the engine reads the buffer from another process
        _, handle = reduce_tensor(self.buffer)  # a fresh export per bucket: one map and one release on the other side
        return {**bucket, "ipc_handles": {self.uuid: handle}}

    def close(self) -> None:
        self.state, self.buffer = None, None
        torch.cuda.ipc_collect()  # frees the buffer once the engines have released their mappings


def open_bucket(bucket: dict, device: torch.device) -> torch.Tensor:
    """Map the bucket's IPC buffer into this process (an engine on the learner's GPU)."""
    from torch.multiprocessing.reductions import rebuild_cuda_tensor

    uuid = device_uuid(device)
    if uuid not in bucket["ipc_handles"]:
        raise RuntimeError(f"CUDA IPC weights come from GPU {list(bucket['ipc_handles'])} but this engine is on {uuid}: "
                           "rollout.weight_sync=cuda_ipc needs the engine on the learner's GPU")
    args = list(bucket["ipc_handles"][uuid])
    args[6] = device.index if device.index is not None else torch.cuda.current_device()  # this process's index
    return rebuild_cuda_tensor(*args)


def join_nccl_group(host: str, port: int, rank: int, world: int):
    """A communicator outside torch.distributed's default group (the learner's DeepSpeed group is separate), made
    the way vLLM's NCCL weight-transfer engine makes its side of it (a StatelessProcessGroup rendezvous)."""
    from vllm.distributed.weight_transfer.nccl_common import stateless_init_process_group

    return stateless_init_process_group(host, port, rank, world, torch.cuda.current_device())


def bucket_metadata(state: dict[str, torch.Tensor], names: list[str]) -> dict:
    """An NCCL bucket's update info (vLLM's field names): the tensors themselves follow by broadcast."""
    return {"names": list(names), "dtype_names": [str(state[n].dtype).removeprefix("torch.") for n in names],
            "shapes": [list(state[n].shape) for n in names]}


def send_bucket(communicator, state: dict[str, torch.Tensor], names: list[str], bucket_bytes: int) -> None:
    """Broadcast one bucket as one packed buffer (vLLM's packed NCCL format: the engines unpack it alike)."""
    from vllm.distributed.weight_transfer.packed_tensor import packed_nccl_broadcast_producer

    packed_nccl_broadcast_producer(iter([(n, state[n]) for n in names]), communicator, src=0,
                                   post_iter_func=lambda item: item[1], buffer_size_bytes=bucket_bytes, num_buffers=1)


def receive_bucket(communicator, bucket: dict, bucket_bytes: int, device: torch.device) -> list:
    """The HF engine's side of `send_bucket`: the bucket's named tensors, copied out of the receive buffer."""
    from vllm.distributed.weight_transfer.packed_tensor import packed_nccl_broadcast_consumer

    received = []
    meta = ((n, (shape, getattr(torch, d))) for n, d, shape in zip(bucket["names"], bucket["dtype_names"],
                                                                    bucket["shapes"]))
    packed_nccl_broadcast_consumer(meta, communicator, src=0, buffer_size_bytes=bucket_bytes, num_buffers=1,
                                   device=device,
                                   post_unpack_func=lambda named: received.extend((n, t.clone()) for n, t in named))
    torch.cuda.current_stream().synchronize()
    return received
