"""Log-probabilities of completion tokens under a causal LM, computed only where they are needed."""

from dataclasses import dataclass

import torch

from rlhf.models.loading import takes_4d_mask
from rlhf.training.segments import per_segment

# Longest packed row (tokens) that takes more than one completion. The packed row's attention runs under a dense
# [L, L] mask, so its cost grows with L squared while the saving (one prompt for several completions) does not;
# at 1024 tokens attention is still a fraction of the linear layers' work on a 135M model.
PACKED_ROW_TOKENS = 1024


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                        temperature: float = 1.0, segments: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T] logprobs of the last `completion_len` tokens of `input_ids`, each given everything before it (in its
    segment, where `segments` [B, T] lays several sequences in a row: rlhf/training/segments.py).

    Rows of a group share their prompt, so the group goes through the model as one packed row: the prompt
    once, then its completions side by side, each completion seeing the prompt and its own earlier tokens
    (a group of 4 with 115 prompt and 32 completion tokens: 243 positions instead of 588). One forward over the
    packed rows also means each weight's gradient is computed once, not summed over a prompt pass and a
    completion pass. Only the positions that predict a completion token go through the LM head, and the logprob
    is the target's logit minus the log-sum-exp (no second [B, T, V] tensor of log-softmax values). Logits are
    divided by the sampling temperature so the result is the distribution the engine sampled.
    """
    if segments is not None:
        return per_segment(lambda ids, mask: completion_logprobs(model, ids, mask, completion_len, temperature),
                           input_ids, attention_mask, completion_len, segments)
    if not takes_4d_mask(model):  # FlashAttention-2: one plain row per sequence
        return plain_completion_logprobs(model, input_ids, attention_mask, completion_len, temperature)
    packed = PackedGroups.build(input_ids, attention_mask, completion_len)
    dtype = getattr(model, "module", model).dtype  # a DeepSpeed engine wraps the HF model
    # additive, in the model's dtype: eager attention adds the mask to the scores (a bool mask would be read as
    # 0/1 there), SDPA takes it as it is
    mask = torch.zeros(packed.attention.shape, dtype=dtype, device=input_ids.device)
    mask.masked_fill_(~packed.attention, torch.finfo(dtype).min)
    logits = model(input_ids=packed.ids, attention_mask=mask[:, None], position_ids=packed.positions,
                   logits_to_keep=packed.keep).logits
    logits = packed.unpack(logits).float() / temperature
    targets = input_ids[:, -completion_len:]
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def plain_completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                              temperature: float = 1.0) -> torch.Tensor:
    """The same values as `completion_logprobs` from one row per sequence under a 2D padding mask (attention kernels
    that take no 4D mask); each prompt is computed once per completion."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                   logits_to_keep=completion_len + 1).logits[:, :-1].float() / temperature
    targets = input_ids[:, -completion_len:]
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@dataclass
class PackedGroups:
    """Rows that share a prompt, packed as [prompt | completion 0 | completion 1 | ...] (R packed rows of L
    tokens, K completion slots each). Prompts stay left-padded; positions count each row's real tokens, and
    every completion's positions continue from its prompt's end."""
    ids: torch.Tensor  # [R, L]
    attention: torch.Tensor  # [R, L, L] bool: query x key
    positions: torch.Tensor  # [R, L]
    keep: torch.Tensor  # [1 + K (T - 1)] the columns whose logits predict a completion token
    packed_row: torch.Tensor  # [B] each original row's packed row
    slot: torch.Tensor  # [B] and its completion slot there
    slots: int  # K
    completion_len: int

    @classmethod
    def build(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int) -> "PackedGroups":
        T, device = completion_len, input_ids.device
        P = input_ids.shape[1] - T
        prompt_rows = torch.cat([input_ids[:, :P], attention_mask[:, :P]], dim=1)
        unique, row_prompt = torch.unique(prompt_rows, dim=0, return_inverse=True)
        # each row's rank among the rows of its prompt, then its packed row (a prompt with more completions than
        # fit in PACKED_ROW_TOKENS takes several) and slot
        order = torch.argsort(row_prompt, stable=True)
        counts = torch.bincount(row_prompt)
        rank = torch.empty_like(row_prompt)
        rank[order] = torch.arange(len(row_prompt), device=device) - (counts.cumsum(0) - counts)[row_prompt[order]]
        per_row = max(1, (PACKED_ROW_TOKENS - P) // T)
        chunk, slot = rank // per_row, rank % per_row
        keys, packed_row = torch.unique(row_prompt * len(row_prompt) + chunk, return_inverse=True)
        owner = keys // len(row_prompt)  # the distinct prompt of each packed row
        K = min(per_row, int(counts.max()))
        R, L = len(keys), P + K * T

        ids = torch.zeros(R, L, dtype=input_ids.dtype, device=device)
        real = torch.zeros(R, L, dtype=torch.bool, device=device)
        ids[:, :P], real[:, :P] = unique[owner, :P], unique[owner, P:].bool()
        columns = P + slot[:, None] * T + torch.arange(T, device=device)
        ids[packed_row[:, None], columns] = input_ids[:, P:]
        real[packed_row[:, None], columns] = attention_mask[:, P:].bool()

        segment = torch.cat([torch.zeros(P, dtype=torch.long, device=device),
                             torch.arange(1, K + 1, device=device).repeat_interleave(T)])
        index = torch.arange(L, device=device)
        visible = (index[None, :] <= index[:, None]) & ((segment[None, :] == 0) | (segment[None, :] == segment[:, None]))
        # padding positions see themselves: a query that sees nothing would make NaNs that reach the gradients
        attention = (visible[None] & real[:, None, :]) | torch.eye(L, dtype=torch.bool, device=device)[None]

        prompt_len = real[:, :P].sum(-1, keepdim=True)
        positions = torch.cat([(real[:, :P].long().cumsum(-1) - 1).clamp(min=0),
                               prompt_len + torch.arange(T, device=device).repeat(K)[None, :]], dim=1)
        slot_starts = P + torch.arange(K, device=device)[:, None] * T
        keep = torch.cat([torch.tensor([P - 1], device=device),
                          (slot_starts + torch.arange(T - 1, device=device)).reshape(-1)])
        return cls(ids, attention, positions, keep, packed_row, slot, K, T)

    def unpack(self, logits: torch.Tensor) -> torch.Tensor:
        """[R, 1 + K (T - 1), V] logits at `keep` -> [B, T, V] in the original rows' order: the prompt's last
        position predicts every completion's first token, each slot's positions the next ones."""
        R, _, V = logits.shape
        first = logits[self.packed_row, 0]
        rest = logits[:, 1:].reshape(R, self.slots, self.completion_len - 1, V)[self.packed_row, self.slot]
        return torch.cat([first[:, None], rest], dim=1)


@torch.no_grad()
def batch_logprobs(model, experience, micro_batch_size: int, temperature: float) -> torch.Tensor:
    """[B, T] logprobs of a whole batch's completions, micro-batch by micro-batch, 0 past each completion's end."""
    return torch.cat([
        completion_logprobs(model, part.input_ids, part.attention_mask, part.completion_ids.shape[1], temperature,
                            part.segments)
        for part in experience.split(micro_batch_size)
    ]) * experience.mask
