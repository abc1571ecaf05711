"""The CPU weight-sync file: the policy's weights as one safetensors file, rewritten in place at every push.

Rewriting the same file (same names and shapes, so the same size and layout) touches the pages it already
has in shared memory; writing a new file would free 540 MB of tmpfs pages and fault in fresh ones, which
took 1-1.5 s instead of 0.1-0.4 s on a 2-core machine. Tensors are written straight from their memory, with no
serialised copy. Not atomic, and need not be: an engine reads the file only after the push that wrote it
has returned.

Format (safetensors): 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape
and byte range, padded with spaces to 8 bytes, then the tensors' bytes back to back.
"""

import json
import os
import struct

import torch

DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}


def write_weights(state: dict[str, torch.Tensor], path: str) -> None:
    header, offset = {}, 0
    for name, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    expected_size = 8 + len(encoded) + offset
    same_layout = os.path.exists(path) and os.path.getsize(path) == expected_size
    with open(path, "r+b" if same_layout else "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for tensor in state.values():
            f.write(tensor.contiguous().reshape(-1).view(torch.uint8).cpu().numpy().data)  # no copy on the CPU
