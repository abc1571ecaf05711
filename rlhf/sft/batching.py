"""A step's demonstrations cut into micro-batches by a token budget (pure).

The step's sequences are sorted by length, longest first, and cut greedily: a micro-batch takes the next sequence
while (its rows + 1) x its longest stays within `max_tokens` (the positions a forward computes, padding included),
so short sequences travel with short ones and pay for no long one's padding. Micro-batches are dealt to the ranks in
turn; a rank with fewer runs empty ones (a forward whose loss is 0): every rank must take part in each micro-batch's
collectives (ZeRO-3's parameter gathers, the gradient reduction at the last one).
"""

import torch


class BudgetError(ValueError):
    """A sequence longer than the micro-batch token budget."""


def plan_micro_batches(lengths: list[int], max_tokens: int | None, micro_batch_size: int,
                       ranks: int = 1) -> list[list[list[int]]]:
    """For each rank, its micro-batches as lists of indices into `lengths` (every rank as many; [] an empty one).
    `max_tokens` None: micro-batches of `micro_batch_size` sequences, still sorted by length."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    micro, current = [], []
    for i in order:
        if max_tokens is not None and lengths[i] > max_tokens:
            raise BudgetError(f"a sequence of {lengths[i]} tokens does not fit train.max_tokens_per_micro_batch="
                              f"{max_tokens}")
        full = ((len(current) + 1) * lengths[current[0]] > max_tokens if max_tokens is not None
                else len(current) == micro_batch_size) if current else False
        if full:
            micro.append(current)
            current = []
        current.append(i)
    if current:
        micro.append(current)
    per_rank = [micro[r::ranks] for r in range(ranks)]
    count = max(len(batches) for batches in per_rank)
    return [batches + [[] for _ in range(count - len(batches))] for batches in per_rank]


def padded_size(lengths: list[int], micro_batch: list[int]) -> int:
    """The positions a micro-batch computes: its rows x its longest."""
    return len(micro_batch) * max((lengths[i] for i in micro_batch), default=0)


def pad(ids: list[list[int]], masks: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded [B, T] token ids, attention mask and target mask."""
    longest = max(len(s) for s in ids)
    tokens = torch.full((len(ids), longest), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), longest), dtype=torch.long)
    targets = torch.zeros((len(ids), longest), dtype=torch.bool)
    for row, (sequence, mask) in enumerate(zip(ids, masks)):
        tokens[row, :len(sequence)] = torch.tensor(sequence)
        attention[row, :len(sequence)] = 1
        targets[row, :len(mask)] = torch.tensor(mask, dtype=torch.bool)
    return tokens, attention, targets


def packed(ids: list[list[int]], masks: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padding-free: the sequences one after another in one row [1, N], position ids restarting at each (what
    flash-attention reads as separate sequences), and the target mask."""
    tokens = torch.tensor([t for s in ids for t in s])[None]
    positions = torch.cat([torch.arange(len(s)) for s in ids])[None]
    targets = torch.tensor([m for mask in masks for m in mask], dtype=torch.bool)[None]
    return tokens, positions, targets
