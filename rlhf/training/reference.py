"""The frozen reference policy: scores completions, never trains.

With one rank it is a plain model. With several (`reference.ranks`), the ranks form a DeepSpeed ZeRO-3 group
with no optimizer: each holds 1/world of every weight (loaded straight into shards, never whole), the
forward pass gathers a layer at a time, and each rank scores its share of the batch. It computes in the
learner's precision (`train.bf16`) with the learner's attention kernel, so their logprobs compare.
"""

import torch

from rlhf.devices import resolve_bf16, resolve_device
from rlhf.experience import Experience
from rlhf.models.loading import load_model
from rlhf.training.deepspeed_engine import init_distributed
from rlhf.training.logprobs import batch_logprobs, completion_logprobs
from rlhf.training.memory import dummy_batch, peak_rss_gib, report


class ReferenceModel:
    def __init__(self, model_path: str, micro_batch_size: int, temperature: float, bf16: bool | None = False,
                 attn_implementation: str = "sdpa", rank: int = 0, world: int = 1):
        self.micro_batch_size, self.temperature, self.rank, self.world = micro_batch_size, temperature, rank, world
        self.device = resolve_device("reference")
        dtype = torch.bfloat16 if resolve_bf16(bf16, self.device) else torch.float32
        if world > 1:
            self.model = load_sharded(model_path, micro_batch_size, world, dtype, attn_implementation, self.device)
        else:
            from transformers import AutoModelForCausalLM

            self.model = load_model(AutoModelForCausalLM, model_path, dtype, attn_implementation, self.device).eval()
        self.vocab_size = (self.model.module if world > 1 else self.model).config.vocab_size

    def logprobs(self, experience: Experience) -> torch.Tensor:
        """[B / world, T]: this rank's share of the batch (ranks in order make the whole batch), on the CPU."""
        share = experience.rank_share(self.rank, self.world).to(self.device)
        return batch_logprobs(self.model, share, self.micro_batch_size, self.temperature).cpu()

    def local_parameters(self) -> int:
        """How many weight values this rank holds (all of them unless sharded)."""
        return sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in self.model.parameters())

    @torch.no_grad()
    def preflight(self, prompt_len: int, completion_len: int) -> dict:
        ids, mask = dummy_batch(self.vocab_size, self.micro_batch_size, prompt_len, completion_len, self.device)
        completion_logprobs(self.model, ids, mask, completion_len, self.temperature)
        return report(f"reference rank {self.rank}" if self.world > 1 else "reference", peak_rss_gib(), self.device)


def load_sharded(model_path: str, micro_batch_size: int, world: int, dtype: torch.dtype, attn_implementation: str,
                 device: torch.device):
    """A ZeRO-3 inference engine; every rank must call this (and then every forward) together."""
    import deepspeed
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    init_distributed(device)
    config = {"train_micro_batch_size_per_gpu": micro_batch_size, "train_batch_size": micro_batch_size * world,
              "zero_optimization": {"stage": 3}, "bf16": {"enabled": dtype == torch.bfloat16},
              "steps_per_print": 10**9}
    zero3_loading = HfDeepSpeedConfig(config)  # while it lives, from_pretrained loads weights straight into shards
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation=attn_implementation)
    del zero3_loading
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine
