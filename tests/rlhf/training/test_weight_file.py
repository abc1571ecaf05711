"""The in-place weight file is a valid safetensors file, and a rewrite replaces every value."""

import torch
from safetensors.torch import load_file

from rlhf.training.weight_file import write_weights


def test_written_file_loads_back_and_rewrites_in_place(tmp_path):
    path = str(tmp_path / "model.safetensors")
    shared = torch.randn(5, 3)
    state = {"embed.weight": shared, "lm_head.weight": shared.clone(), "norm.weight": torch.randn(3),
             "half": torch.randn(2, 2).to(torch.bfloat16), "column": torch.randn(4, 6)[:, 1]}  # a strided view
    write_weights(state, path)
    for name, tensor in load_file(path).items():
        torch.testing.assert_close(tensor, state[name], atol=0, rtol=0)

    inode = (tmp_path / "model.safetensors").stat().st_ino
    updated = {name: t + 1 for name, t in state.items()}
    write_weights(updated, path)
    assert (tmp_path / "model.safetensors").stat().st_ino == inode  # the same file, rewritten
    for name, tensor in load_file(path).items():
        torch.testing.assert_close(tensor, updated[name], atol=0, rtol=0)
