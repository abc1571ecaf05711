"""The policy learner: a causal LM trained by DeepSpeed (ZeRO over gloo on CPU, NCCL on GPU).

One optimizer step per call to `train_step`; the batch is cut into micro-batches whose losses are each a
share of the whole batch's loss (see `aggregate_loss`), so the accumulated gradient is the full-batch one.
"""

import math
import os

import torch

from rlhf.algorithms import POLICY_LOSSES, aggregate_loss, kl_estimate
from rlhf.experience import Experience
from rlhf.models.folders import write_atomically
from rlhf.training.logprobs import completion_logprobs


class NonFiniteLossError(RuntimeError):
    pass


def deepspeed_config(train_cfg, batch_size: int, world_size: int) -> dict:
    micro = train_cfg.micro_batch_size
    return {
        "train_batch_size": batch_size,
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": batch_size // (micro * world_size),
        "gradient_clipping": train_cfg.max_grad_norm,
        "zero_optimization": {"stage": train_cfg.zero_stage},
        "bf16": {"enabled": train_cfg.bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class PolicyLearner:
    def __init__(self, model_path: str, train_cfg, algo_cfg, batch_size: int, max_new_tokens: int,
                 temperature: float, seed: int, rank: int = 0, world_size: int = 1):
        import deepspeed
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        self.algo, self.max_new_tokens, self.temperature = algo_cfg, max_new_tokens, temperature
        self.policy_loss = POLICY_LOSSES.get(algo_cfg.policy_loss)
        deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl")
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        if train_cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        # A client AdamW avoids DeepSpeed's JIT-compiled optimizers (minutes of build on first use).
        optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
        warmup = max(1, train_cfg.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler,
            config=deepspeed_config(train_cfg, batch_size, world_size),
        )
        self.micro_batch_size = train_cfg.micro_batch_size
        self.steps = 0

    def train_step(self, experience: Experience) -> dict[str, float]:
        if self.algo.kl_beta > 0 and experience.ref_logp is None:
            raise ValueError("algo.kl_beta > 0 but the experience carries no reference logprobs (ref_logp)")
        self.engine.train()
        num_tokens = experience.mask.sum().item()
        totals = {"loss": 0.0, "kl": 0.0, "logprob_gap": 0.0}
        for part in experience.split(self.micro_batch_size):
            logp = completion_logprobs(self.engine, part.input_ids, part.attention_mask,
                                       part.completion_ids.shape[1], self.temperature)
            # One optimizer step per rollout batch: the policy that sampled is the one being trained, so the
            # ratio is exactly 1 in value and its gradient is that of logp (TRL's num_iterations=1).
            old_logp = logp.detach()
            token_losses = self.policy_loss(logp, old_logp, part.advantages, part.mask, self.algo)
            kl = None
            if self.algo.kl_beta > 0:
                kl = kl_estimate(logp, part.ref_logp, self.algo.kl_estimator)
                token_losses = token_losses + self.algo.kl_beta * kl
            loss = aggregate_loss(token_losses, part.mask, self.algo.loss_aggregation,
                                  num_sequences=experience.size, num_tokens=num_tokens, max_len=self.max_new_tokens)
            if not math.isfinite(loss.item()):
                raise NonFiniteLossError(f"policy loss is {loss.item()} at step {self.steps}; "
                                         f"non-finite quantity: {_first_non_finite(logp, part, kl)}")
            self.engine.backward(loss, scale_wrt_gas=False)  # already a share of the whole batch
            if self.engine.is_gradient_accumulation_boundary() and not self.engine.zero_optimization():
                # without ZeRO, DeepSpeed clips but does not keep the norm
                grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
                totals["grad_norm"] = torch.nn.utils.get_total_norm(grads).item()
            self.engine.step()

            share = part.mask.sum().item() / max(num_tokens, 1.0)
            totals["loss"] += loss.item()
            totals["logprob_gap"] += _masked_mean((logp.detach() - part.rollout_logp).abs(), part.mask) * share
            if kl is not None:
                totals["kl"] += _masked_mean(kl.detach(), part.mask) * share
        self.steps += 1
        if self.engine.zero_optimization():
            totals["grad_norm"] = float(self.engine.get_global_grad_norm())
        totals["lr"] = self.engine.get_lr()[0]
        return totals

    @torch.no_grad()
    def logprobs(self, experience: Experience) -> torch.Tensor:
        """[B, T] logprobs of the completions under the current weights (masked to 0 past each end)."""
        self.engine.eval()
        return torch.cat([
            completion_logprobs(self.engine, part.input_ids, part.attention_mask, part.completion_ids.shape[1],
                                self.temperature)
            for part in experience.split(self.micro_batch_size)
        ]) * experience.mask

    def save_weights(self, folder: str) -> str:
        """Write the full state dict (tied weights included) as one safetensors file; rank 0 writes."""
        from safetensors.torch import save_file

        state = self._full_state_dict()
        if state is not None:
            write_atomically(folder, lambda tmp: save_file(state, os.path.join(tmp, "model.safetensors")))
        return folder

    def save_pretrained(self, folder: str, tokenizer_path: str) -> str:
        from transformers import AutoTokenizer

        state = self._full_state_dict()
        if state is not None:
            module = self.engine.module

            def write(tmp):
                module.save_pretrained(tmp, state_dict=state)
                AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(tmp)

            write_atomically(folder, write)
        return folder

    def _full_state_dict(self) -> dict[str, torch.Tensor] | None:
        module = self.engine.module
        if self.engine.zero_optimization_stage() == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
            return None
        # Tied embeddings: vLLM needs lm_head.weight present, and safetensors refuses shared storage.
        return {k: v.contiguous().clone() for k, v in state.items()}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return ((values * mask).sum() / mask.sum().clamp(min=1)).item()


def _first_non_finite(logp, part: Experience, kl) -> str:
    named = {"policy logprobs": logp, "advantages": part.advantages, "reference logprobs": part.ref_logp, "kl": kl}
    for name, value in named.items():
        if value is not None and not torch.isfinite(value[part.mask.bool()]).all():
            return name
    return "the aggregated loss"
