"""Loading a HF model onto a role's device with the attention kernel the learner's packed groups need.

Packed groups (`rlhf/training/logprobs.py`) pass a 4D attention mask. SDPA (PyTorch's fused attention, HF's
default on GPU and CPU) and eager attention take it; FlashAttention-2 takes no 4D mask, so under it the
logprobs fall back to one plain row per sequence. A model class without SDPA support loads with eager.
"""

import logging

import torch

log = logging.getLogger(__name__)
PACKED_MASK_KERNELS = ("sdpa", "eager")


def load_model(auto_class, path: str, dtype: torch.dtype, attn_implementation: str, device: torch.device, **kwargs):
    try:
        model = auto_class.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation, **kwargs)
    except (ValueError, ImportError) as err:
        if attn_implementation == "eager":
            raise
        log.warning("%s cannot run attention kernel %r (%s); loading it with eager attention", path,
                    attn_implementation, err)
        model = auto_class.from_pretrained(path, dtype=dtype, attn_implementation="eager", **kwargs)
    return model.to(device)


def takes_4d_mask(model) -> bool:
    return getattr(model, "module", model).config._attn_implementation in PACKED_MASK_KERNELS
