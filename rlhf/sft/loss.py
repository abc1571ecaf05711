"""The SFT objective (pure): cross-entropy of each target token given the tokens before it, summed and divided by the
target tokens of the whole step (every rank's, every micro-batch's), so each token weighs the same (TRL's default;
docs/algorithms.md, spec §13): a micro-batch's loss is its share of the step's, and the shares add up."""

import torch


def shifted_targets(targets: torch.Tensor) -> torch.Tensor:
    """[B, T] target mask -> [B, T] mask of the positions that predict a target (position t predicts token t + 1)."""
    predicts = torch.zeros_like(targets)
    predicts[:, :-1] = targets[:, 1:]
    return predicts


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[N, V] logits, [N] labels -> [N] cross-entropy, computed in fp32 (log-sum-exp minus the label's logit)."""
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - logits.gather(-1, labels[:, None]).squeeze(-1)


def step_loss(losses: torch.Tensor, step_targets: int) -> torch.Tensor:
    """A micro-batch's share of the step's loss: its tokens' losses summed over the step's target count."""
    return losses.sum() / max(step_targets, 1)


def correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Targets whose most likely token is the label (sft/token_accuracy's numerator)."""
    return int((logits.argmax(-1) == labels).sum())
