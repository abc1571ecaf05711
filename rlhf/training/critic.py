"""The critic learner: a language model with a scalar value head, trained by DeepSpeed like the policy.

It is a HF `AutoModelForTokenClassification` with one label (one per objective under PAMA): the backbone comes from the policy's folder or
from any other folder (a reward model's, say), the value head starts fresh when the folder has none.
"""

import math

import torch

from rlhf.algorithms import aggregate_loss
from rlhf.config import micro_batch
from rlhf.devices import resolve_device
from rlhf.algorithms.losses import clipped_value_loss
from rlhf.experience import Experience
from rlhf.training.policy import NonFiniteLossError
from rlhf.training.memory import learner_preflight
from rlhf.training.lora import add_adapter
from rlhf.training.segments import per_segment
from rlhf.training.deepspeed_engine import (backward_and_step, load_learner_model, load_training_state, make_engine,
                                            save_training_state)


def completion_values(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                      segments: torch.Tensor | None = None):
    """[B, T] value of the state before each completion token (the position that predicts it); [B, T, K]
    with K value heads. `segments`: several sequences in a row, each valued on its own (rlhf/training/segments.py)."""
    def forward(input_ids, attention_mask):
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        values = out[:, -completion_len - 1 : -1].float()
        return values[..., 0] if values.shape[-1] == 1 else values

    return per_segment(forward, input_ids, attention_mask, completion_len, segments)


class CriticLearner:
    def __init__(self, model_path: str, critic_cfg, algo_cfg, batch_size: int, seed: int, heads: int = 1,
                 rank: int = 0, world: int = 1):
        from transformers import AutoModelForTokenClassification

        torch.manual_seed(seed)
        self.device = resolve_device(f"critic rank {rank}")
        self.algo = algo_cfg
        self.mini_batch_size = batch_size // algo_cfg.update.mini_batches
        self.micro_batch_size = micro_batch(critic_cfg.micro_batch_size, self.mini_batch_size, world)
        model = load_learner_model(AutoModelForTokenClassification, model_path, critic_cfg, self.mini_batch_size, world,
                                   self.device, num_labels=heads)
        if critic_cfg.lora.rank:  # the value head trains whole (peft keeps it beside the adapter)
            model = add_adapter(model, critic_cfg.lora, "TOKEN_CLS")
        self.rank, self.world = rank, world
        self.engine = make_engine(model, critic_cfg, self.mini_batch_size, world)

    @torch.no_grad()
    def values(self, experience: Experience) -> torch.Tensor:
        """[B, T] (or [B, T, K]) values on the CPU."""
        self.engine.eval()
        experience = experience.to(self.device)
        values = torch.cat([
            completion_values(self.engine, p.input_ids, p.attention_mask, p.completion_ids.shape[1], p.segments)
            for p in experience.split(self.micro_batch_size)
        ])
        return (values * (experience.mask if values.dim() == 2 else experience.mask[..., None])).cpu()

    def train_step(self, experience: Experience) -> dict[str, float]:
        if experience.values is None or experience.returns is None:
            raise ValueError("the critic needs the experience's values and returns")
        self.engine.train()
        totals, updates = {"value_loss": 0.0}, 0
        for _ in range(self.algo.update.epochs):
            for mini in experience.split(self.mini_batch_size):
                num_tokens = mini.mask.sum().item()
                for part in mini.rank_share(self.rank, self.world).split(self.micro_batch_size):
                    part = part.to(self.device)
                    values = completion_values(self.engine, part.input_ids, part.attention_mask,
                                               part.completion_ids.shape[1], part.segments)
                    token_losses = clipped_value_loss(values, part.values, part.returns, self.algo.critic.value_clip)
                    if token_losses.dim() == 3:  # one value head per objective: their losses averaged
                        token_losses = token_losses.mean(-1)
                    loss = aggregate_loss(token_losses, part.mask, "token-mean", num_tokens=num_tokens)
                    if not math.isfinite(loss.item()):
                        raise NonFiniteLossError(f"critic loss is {loss.item()}: check the returns and rewards")
                    backward_and_step(self.engine, loss * self.world, totals)  # ranks' gradients are averaged
                    totals["value_loss"] += loss.item()
                updates += 1
        totals["value_loss"] /= updates
        totals["explained_variance"] = explained_variance(experience.values, experience.returns, experience.mask)
        return {f"critic/{k}": v for k, v in totals.items()}

    def preflight(self, prompt_len: int, completion_len: int) -> dict:
        return learner_preflight(self.engine, completion_values, self.micro_batch_size, prompt_len, completion_len,
                                 role=f"critic rank {self.rank}")

    def save_checkpoint(self, folder: str) -> None:
        save_training_state(self.engine, folder, {})

    def load_checkpoint(self, folder: str) -> None:
        load_training_state(self.engine, folder)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over valid tokens: 1 is a perfect critic, <= 0 a useless one."""
    valid = mask.bool()
    target = returns[valid]
    if target.numel() < 2 or target.var() == 0:
        return float("nan")
    return (1 - (target - values[valid]).var() / target.var()).item()
