"""bf16 master weights dithered off the bf16 grid (rlhf/training/deepspeed_engine.py::dither_on_grid)."""

import torch

from rlhf.training.deepspeed_engine import dither_on_grid


def test_dithering_keeps_the_bf16_weights_and_makes_their_rounding_follow_small_updates():
    # weights that bf16 holds exactly, an RMSNorm's 1.0 and powers of two among them, and some it does not
    g = torch.Generator().manual_seed(0)
    grid = torch.cat([torch.ones(20000), -torch.full((20000,), 0.25),
                      (torch.randn(20000, generator=g) * 0.1).bfloat16().float()])
    off = torch.randn(1000, generator=g) * 0.1
    values = torch.cat([grid, off, torch.zeros(10)])
    dithered = dither_on_grid(values, torch.Generator().manual_seed(1))
    assert torch.equal(dithered.bfloat16(), values.bfloat16())  # the model computes with the same weights
    assert torch.equal(dithered[-1010:], values[-1010:])  # off the grid (and 0): unchanged
    assert (dithered[:60000] != grid).float().mean() > 0.999  # fp32 tells 2^16 positions within a bf16 step
    step = 2.0 ** -7  # bf16's step at 1.0
    for update in (0.05 * step, 0.3 * step):  # what a few Adam steps add up to, all of one sign
        on_grid = (grid[:20000] + update).bfloat16().float() - 1.0
        assert on_grid.abs().max() == 0  # from the grid the weight does not move at all
        moved = ((dithered[:20000] + update).bfloat16().float() - 1.0).mean().item()
        assert abs(moved - update) < 0.1 * update  # dithered: as much as the update, on average
    assert torch.equal(dither_on_grid(values, torch.Generator().manual_seed(1)), dithered)  # seeded: every rank alike
