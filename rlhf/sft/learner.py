"""The SFT step on the policy learner's DeepSpeed engine (the same engine, optimizer and checkpoints an RL run
trains): each rank runs its micro-batches of the step's plan (rlhf/sft/batching.py), each micro-batch's loss its share
of the step's (rlhf/sft/loss.py), one optimizer step at the last. The micro-batch count varies with the lengths, so
the accumulation boundary is set by hand (DeepSpeed's `set_gradient_accumulation_boundary`) rather than counted.

Only the positions that predict a target go through the LM head (`logits_to_keep`): a prompt's positions cost the
transformer but no [T, V] logits. Metrics are this rank's shares (LearnerGroup.reduce adds them).
"""

import math
import time

import torch

from rlhf.sft.batching import packed, pad
from rlhf.sft.data import Sequences
from rlhf.sft.loss import correct, shifted_targets, step_loss, token_losses
from rlhf.training.deepspeed_engine import backward_and_step, full_state_dict
from rlhf.training.memory import learner_preflight


class NonFiniteSftLossError(ValueError):
    pass


def forward(engine, sequences: Sequences, micro_batch: list[int], device, packing: bool):
    """Logits at the positions that predict a target [N, V] and those targets [N], plus the positions computed."""
    ids = [sequences.ids[i] for i in micro_batch]
    masks = [sequences.masks[i] for i in micro_batch]
    if packing:  # flash-attention only (checked at start-up): one row, positions restart at each sequence
        tokens, positions, targets = packed(ids, masks)
        inputs = {"input_ids": tokens.to(device), "position_ids": positions.to(device)}
    else:
        tokens, attention, targets = pad(ids, masks)
        inputs = {"input_ids": tokens.to(device), "attention_mask": attention.to(device)}
    predicts = shifted_targets(targets).to(device)
    keep = predicts.any(0).nonzero().squeeze(-1)  # the columns where some row predicts a target
    logits = engine(**inputs, logits_to_keep=keep).logits  # [B, K, V]
    rows = predicts[:, keep]
    labels = tokens.to(device)[:, keep + 1][rows]
    return logits[rows], labels, tokens.numel()


def _nothing(engine, device) -> torch.Tensor:
    """A rank without a micro-batch of its own still runs one (ZeRO-3 gathers, the gradient reduction): a one-token
    forward whose loss is 0."""
    logits = engine(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device), logits_to_keep=1).logits
    return logits.sum() * 0.0


def train_step(learner, sequences: Sequences, plan: list[list[list[int]]], step_targets: int,
               packing: bool = False) -> dict[str, float]:
    """One optimizer step over this rank's micro-batches (`plan[rank]`); `step_targets`: every rank's target tokens."""
    engine, device = learner.engine, learner.device
    micro_batches = plan[learner.rank]
    started = time.perf_counter()
    engine.train()
    totals = {"sft/loss": 0.0, "sft/token_accuracy": 0.0, "sft/tokens": 0, "sft/input_tokens": 0, "sft/positions": 0}
    for k, micro in enumerate(micro_batches):
        engine.set_gradient_accumulation_boundary(k == len(micro_batches) - 1)
        if micro:
            logits, labels, positions = forward(engine, sequences, micro, device, packing)
            losses = token_losses(logits, labels)
            loss = step_loss(losses, step_targets)
            totals["sft/token_accuracy"] += correct(logits.detach(), labels) / step_targets
            totals["sft/tokens"] += len(labels)
            totals["sft/input_tokens"] += sum(len(sequences.ids[i]) for i in micro)
            totals["sft/positions"] += positions
        else:
            loss = _nothing(engine, device)
        if not math.isfinite(loss.item()):
            raise NonFiniteSftLossError(f"the SFT loss is {loss.item()} at micro-batch {k} of the step (learning rate "
                                        "too high, or bf16 overflow)")
        # DeepSpeed averages gradients over the ranks; each rank's loss is its share of the sum
        backward_and_step(engine, loss * learner.world, totals)
        totals["sft/loss"] += loss.item()
    totals["lr"] = engine.get_lr()[0]
    totals["time/learner"] = time.perf_counter() - started
    return totals


@torch.no_grad()
def nll(learner, sequences: Sequences, plan: list[list[list[int]]], packing: bool = False) -> dict[str, float]:
    """This rank's summed cross-entropy of its micro-batches' targets and their count (eval/nll = sum / count)."""
    engine, device = learner.engine, learner.device
    engine.eval()
    total, count = 0.0, 0
    for micro in plan[learner.rank]:
        if micro:
            logits, labels, _ = forward(engine, sequences, micro, device, packing)
            total += token_losses(logits, labels).sum().item()
            count += len(labels)
        else:
            _nothing(engine, device)
    return {"nll_sum": total, "nll_tokens": count}


def start_phase(learner, lr: float) -> None:
    """A phase of its own on the learner's engine (a warm start before RL, then the RL phase): a fresh optimizer state
    (Adam's moments of the phase before cleared) and learning-rate schedule (warm-up again) at `lr`."""
    engine = learner.engine
    optimizer = engine.optimizer
    while not isinstance(optimizer, torch.optim.Optimizer) or hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer  # DeepSpeed's wrappers (ZeRO, bf16) hold the client AdamW
    optimizer.state.clear()
    scheduler = engine.lr_scheduler
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    scheduler.last_epoch = -1
    scheduler.step()  # as a new scheduler starts: step 0 of the warm-up


def end_phase(learner, lr: float) -> None:
    """After a warm start: DeepSpeed counts the accumulation boundary again (from a boundary), and the RL phase starts
    with a fresh optimizer state at `lr`."""
    engine = learner.engine
    engine.set_gradient_accumulation_boundary(False)
    engine._is_gradient_accumulation_boundary = None  # DeepSpeed's own counting again
    gas = engine.gradient_accumulation_steps()
    engine.micro_steps += -engine.micro_steps % gas
    start_phase(learner, lr)


def load_reference(learner, folder: str, bf16: bool | None, attn_implementation: str) -> None:
    """The warm-started policy (a HF folder) as this rank's frozen reference, loaded as the reference actor loads one
    (the learner's precision and attention kernel): every rank holds it whole."""
    from transformers import AutoModelForCausalLM

    from rlhf.devices import resolve_bf16
    from rlhf.models.loading import load_model

    dtype = torch.bfloat16 if resolve_bf16(bf16, learner.device) else torch.float32
    model = load_model(AutoModelForCausalLM, folder, dtype, attn_implementation, learner.device).eval()
    learner.frozen_reference = model.requires_grad_(False)


def preflight(learner, rows: int, length: int, targets: int) -> dict:
    """The memory pre-flight of an SFT run (and of a warm start): a push's gather (an evaluation pushes the weights),
    then the heaviest micro-batch, `rows` demonstrations of `length` tokens whose last `targets` positions go through
    the LM head, forward and backward, with the gradients and optimizer state added from the parameter count
    (rlhf/training/memory.py)."""
    state = full_state_dict(learner.engine)
    del state
    learner.release_push_memory()

    def forward(module, ids, mask, _):
        return module(input_ids=ids, attention_mask=mask, logits_to_keep=targets).logits

    return learner_preflight(learner.engine, forward, rows, 0, length, role=f"policy rank {learner.rank}")


def warm_start_preflight(learner, prompt_len: int, completion_len: int, case: tuple, reference: tuple | None) -> dict:
    """An RL run's policy rank with a warm start: the warm start's heaviest micro-batch (`case`, see `preflight`), then
    the RL pre-flight while holding the frozen copy of the warm-started policy the RL phase keeps as its reference
    (`reference`: load_reference's arguments, the model folder standing in for the warm-started one; None with
    sft.reference=base). Peaks are high-water marks: the report is the larger of the two phases."""
    preflight(learner, *case)
    if reference is not None:
        load_reference(learner, *reference)
    try:
        report = learner.preflight(prompt_len, completion_len)
    finally:
        learner.frozen_reference = None
    return {**report, "frozen_reference": reference is not None}
