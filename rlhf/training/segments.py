"""Rows that hold several sequences: an agent's episode that rewrote its history (a summary, a dropped turn) is one
row of the batch, its later segments laid after the first in the completion, each opened by its own prompt
(`Experience.segments`: 0 on the tokens that continue the row's prompt, k on the k-th later segment's).

The engine sampled each segment from that segment's tokens alone, so the learner must score it so: `per_segment`
runs a forward over the row with its later segments cut out (the first segment, as a plain row), and over one extra
row per later segment, which holds only that segment's tokens at the start of the completion, an empty prompt
before them (positions from 0, seeing nothing of the episode's other segments), then puts each result back at its
columns. The batch keeps one row per episode, so the learners' batch and mini-batch sizes, DeepSpeed's
accumulation, the ranks' shares and the group statistics (over episodes) stay as they are; only the forward
takes a row more per later segment. A later segment's first token is its prompt's, context: it has no token
before it in its sequence, and its value there (predicted from padding) is never trained on.
"""

from collections.abc import Callable

import torch


def per_segment(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], input_ids: torch.Tensor,
                attention_mask: torch.Tensor, completion_len: int, segments: torch.Tensor | None) -> torch.Tensor:
    """`forward(input_ids, attention_mask) -> [B, T, ...]` (one value per completion column) with every later
    segment of `segments` [B, T] computed as a sequence of its own."""
    if segments is None or not bool((segments > 0).any()):
        return forward(input_ids, attention_mask)
    ids, mask, places = unfold(input_ids, attention_mask, completion_len, segments)
    return fold(forward(ids, mask), places, input_ids.shape[0])


def unfold(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
           segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int]]]:
    """The rows with their later segments masked out, then one row per later segment (its tokens at the start of
    the completion, an empty prompt), and for each extra row (its source row, first column, length)."""
    width = input_ids.shape[1]
    prompt = width - completion_len
    base_mask = attention_mask.clone()
    base_mask[:, prompt:] *= (segments == 0).to(attention_mask.dtype)
    extra_ids, extra_masks, places = [], [], []
    for row in torch.nonzero((segments > 0).any(-1)).flatten().tolist():
        for k in torch.unique(segments[row][segments[row] > 0]).tolist():
            columns = torch.nonzero(segments[row] == k).flatten()
            start, length = int(columns[0]), len(columns)
            if int(columns[-1]) - start + 1 != length:
                raise ValueError(f"segment {k} of row {row} is not contiguous")
            ids = torch.zeros(width, dtype=input_ids.dtype, device=input_ids.device)
            mask = torch.zeros(width, dtype=attention_mask.dtype, device=attention_mask.device)
            ids[prompt:prompt + length] = input_ids[row, prompt + start:prompt + start + length]
            mask[prompt:prompt + length] = attention_mask[row, prompt + start:prompt + start + length]
            extra_ids.append(ids)
            extra_masks.append(mask)
            places.append((row, start, length))
    return (torch.cat([input_ids, torch.stack(extra_ids)]), torch.cat([base_mask, torch.stack(extra_masks)]),
            places)


def fold(values: torch.Tensor, places: list[tuple[int, int, int]], rows: int) -> torch.Tensor:
    """[rows + extra, T, ...] -> [rows, T, ...]: each extra row's values back at its segment's columns."""
    out = values[:rows].clone()
    for extra, (row, start, length) in enumerate(places):
        out[row, start:start + length] = values[rows + extra, :length]
    return out
