"""The policy learner: a causal LM trained by DeepSpeed (ZeRO over gloo on CPU, NCCL on GPU).

`train_step` runs `algo.update.epochs` passes over the batch, each split into `algo.update.mini_batches`
mini-batches, one optimizer step per mini-batch. With several ranks each takes a contiguous share of every mini-batch.
Each share is cut into micro-batches whose losses are each a share of the mini-batch's loss (see
`aggregate_loss`), so the accumulated, rank-averaged gradient is the mini-batch's. Metrics a rank returns
are its share of the whole (summed over ranks), except `grad_norm` and `lr`, which every rank holds, times
(`time/...`), of which the slowest rank's counts, and extremes (`..._max`, `..._min`) over the ranks' own.
"""

import math
import os
import time

import torch

from rlhf.algorithms import aggregate_loss
from rlhf.algorithms import LossInputs, kl_estimate, policy_objective
from rlhf.config import micro_batch
from rlhf.devices import resolve_device
from rlhf.experience import Experience
from rlhf.models.folders import write_atomically
from rlhf.training.deepspeed_engine import (
    backward_and_step,
    full_state_dict,
    load_learner_model,
    load_training_state,
    make_engine,
    save_training_state,
)
from rlhf.training.logprobs import batch_logprobs, completion_logprobs
from rlhf.training import weight_transfer
from rlhf.training.lora import add_adapter, disable_dropout, is_adapted, plain_model
from rlhf.training.memory import learner_preflight
from rlhf.training.weight_file import write_weights


class NonFiniteLossError(RuntimeError):
    pass


class PolicyLearner:
    def __init__(self, model_path: str, train_cfg, algo_cfg, batch_size: int, max_new_tokens: int,
                 temperature: float, seed: int, rank: int = 0, world: int = 1):
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        self.device = resolve_device(f"policy rank {rank}")
        self.algo, self.max_new_tokens, self.temperature = algo_cfg, max_new_tokens, temperature
        self.mini_batch_size = batch_size // algo_cfg.update.mini_batches
        self.micro_batch_size = micro_batch(train_cfg.micro_batch_size, self.mini_batch_size, world)
        self.rank, self.world = rank, world
        # fp32 weights: under bf16 DeepSpeed keeps them as the optimizer's master copy and computes in bf16
        model = load_learner_model(AutoModelForCausalLM, model_path, train_cfg, self.mini_batch_size, world, self.device)
        disable_dropout(model)
        if train_cfg.lora.rank:
            model = add_adapter(model, train_cfg.lora, "CAUSAL_LM")
        self.engine = make_engine(model, train_cfg, self.mini_batch_size, world)
        self.steps = 0
        self.frozen_reference = None  # a warm start's policy as the reference (rlhf/sft/warm_start.py)

    def train_step(self, experience: Experience) -> dict[str, float]:
        if (self.algo.kl.beta > 0 or self.algo.loss.ratio_against == "reference") and experience.ref_logp is None:
            raise ValueError("algo.kl.beta > 0 or algo.loss.ratio_against=reference, but the experience carries no "
                             "reference logprobs (ref_logp)")
        # With one optimizer step per batch the sampling policy is the one being trained: the ratio is 1 in
        # value and carries the gradient of logp (TRL's num_iterations=1); no forward pass is spent on it.
        on_policy = self.algo.update.epochs == 1 and self.mini_batch_size >= experience.size
        totals = {"loss": 0.0, "kl": 0.0, "logprob_gap": 0.0, "mismatch_kl": 0.0, "clip_fraction": 0.0,
                  "time/old_logprobs": 0.0}
        if not on_policy:
            start = time.perf_counter()
            experience.old_logp = (experience.rollout_logp if self.algo.update.old_logprobs == "rollout"
                                   else self.logprobs(experience))
            totals["time/old_logprobs"] = time.perf_counter() - start  # part of the driver's time/train
            # how far the engine's logprobs are from the learner's on the same weights (0 by construction
            # when the engine's are used as the old ones); every rank reports a share
            for name, values in mismatch(experience.old_logp, experience.rollout_logp).items():
                totals[name] = _masked_mean(values, experience.mask) / self.world
        self.engine.train()
        updates, valid_rows = 0, max((experience.mask.sum(-1) > 0).sum().item(), 1)
        for _ in range(self.algo.update.epochs):
            for mini in experience.split(self.mini_batch_size):
                num_tokens = mini.mask.sum().item()
                for part in mini.rank_share(self.rank, self.world).split(self.micro_batch_size):
                    part = part.to(self.device)
                    logp = completion_logprobs(self.engine, part.input_ids, part.attention_mask,
                                               part.completion_ids.shape[1], self.temperature, part.segments)
                    output = policy_objective(LossInputs(
                        logp=logp, old_logp=logp.detach() if on_policy else part.old_logp,
                        rollout_logp=part.rollout_logp, ref_logp=part.ref_logp, advantages=part.advantages,
                        mask=part.mask, cfg=self.algo.loss), self.algo.kl.beta, self.algo.kl.estimator,
                        self.algo.correction)
                    loss = aggregate_loss(output.token_losses, part.mask, self.algo.loss.aggregation,
                                          num_sequences=mini.size, num_tokens=num_tokens, max_len=self.max_new_tokens)
                    if not math.isfinite(loss.item()):
                        raise NonFiniteLossError(f"policy loss is {loss.item()} at step {self.steps}; non-finite "
                                                 f"quantity: {_first_non_finite(logp, part, output.metrics.get('kl'))}")
                    # DeepSpeed averages gradients over the ranks; each rank's loss is its share of the sum
                    backward_and_step(self.engine, loss * self.world, totals)

                    epochs = self.algo.update.epochs
                    share = part.mask.sum().item() / max(experience.mask.sum().item(), 1.0) / epochs
                    totals["loss"] += loss.item()
                    metrics = {**output.metrics, **(mismatch(logp.detach(), part.rollout_logp) if on_policy else {})}
                    for name, values in metrics.items():  # the loss's own metrics, token means
                        totals[name] = totals.get(name, 0.0) + _masked_mean(values, part.mask) * share
                    rows = part.mask.sum(-1) > 0
                    for name, values in output.sequence_metrics.items():  # means over the sequences
                        totals[name] = totals.get(name, 0.0) + values[rows].sum().item() / valid_rows / epochs
                    for name in output.extremes:
                        values = output.metrics[name][part.mask.bool()]
                        if values.numel():
                            totals[f"{name}_max"] = max(totals.get(f"{name}_max", -math.inf), values.max().item())
                            totals[f"{name}_min"] = min(totals.get(f"{name}_min", math.inf), values.min().item())
                updates += 1
        totals["loss"] /= updates
        totals["lr"] = self.engine.get_lr()[0]
        self.steps += 1
        return totals

    def logprobs(self, experience: Experience) -> torch.Tensor:
        """[B, T] logprobs of the completions under the current weights (masked to 0 past each end), on the CPU."""
        self.engine.eval()
        return batch_logprobs(self.engine, experience.to(self.device), self.micro_batch_size, self.temperature).cpu()

    @torch.no_grad()
    def reference_logprobs(self, experience: Experience) -> torch.Tensor:
        """With LoRA the reference is the base model: this rank's share of the batch scored with the adapter off
        (ranks in order make the whole batch), on the CPU. No reference copy is loaded. After a warm start it is the
        warm-started policy, a frozen copy this rank holds."""
        self.engine.eval()
        share = experience.rank_share(self.rank, self.world).to(self.device)
        if self.frozen_reference is not None:
            return batch_logprobs(self.frozen_reference, share, self.micro_batch_size, self.temperature).cpu()
        with self.engine.module.disable_adapter():
            return batch_logprobs(self.engine, share, self.micro_batch_size, self.temperature).cpu()

    def preflight(self, prompt_len: int, completion_len: int) -> dict:
        # a push's peak is measured too: its full weights gathered (under ZeRO-3 every rank gathers and clones the
        # whole model), then let go, as after every push
        state = full_state_dict(self.engine)
        del state
        self.release_push_memory()
        forward = lambda engine, ids, mask, t: completion_logprobs(engine, ids, mask, t, self.temperature)  # noqa: E731
        return learner_preflight(self.engine, forward, self.micro_batch_size, prompt_len, completion_len,
                                 role=f"policy rank {self.rank}")

    def save_checkpoint(self, folder: str) -> None:
        save_training_state(self.engine, folder, {"steps": self.steps})

    def load_checkpoint(self, folder: str) -> None:
        self.steps = load_training_state(self.engine, folder)["steps"]

    def save_weights(self, folder: str) -> str:
        """Write the full state dict (tied weights included) as one safetensors file for the engines to reload;
        rank 0 writes."""
        state = full_state_dict(self.engine)
        if state is not None:
            os.makedirs(folder, exist_ok=True)
            write_weights(state, os.path.join(folder, "model.safetensors"))
        del state
        self.release_push_memory()
        return folder

    def release_push_memory(self) -> None:
        """After a push the gathered copy is gone; on a GPU its cached blocks go back to the device, before engines
        that share it wake up and map their memory again."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def export_weights(self) -> dict | None:
        """The full weights as arrays for Ray's object store (rank 0; None on the others, which take part in the
        ZeRO-3 gather)."""
        state = full_state_dict(self.engine)
        return None if state is None else weight_transfer.to_arrays(state)

    # GPU weight-sync routes. Every rank calls the first call of a push (ZeRO-3 gathers the weights once,
    # collectively); rank 0 sends.
    def join_weight_group(self, host: str, port: int, rank: int, world: int) -> None:
        """NCCL route, rank 0: host the group's rendezvous as its rank 0."""
        self.weight_group = weight_transfer.join_nccl_group(host, port, rank, world)

    def leave_weight_group(self) -> None:
        self.weight_group.destroy()
        self.weight_group = None

    def prepare_nccl_push(self, bucket_bytes: int) -> list[dict] | None:
        """Gather the full weights once and plan the buckets; rank 0 returns each bucket's update info."""
        state = full_state_dict(self.engine)
        if state is None:
            return None
        self.nccl_push = (state, weight_transfer.plan_buckets(state, bucket_bytes), bucket_bytes)
        return [weight_transfer.bucket_metadata(state, names) for names in self.nccl_push[1]]

    def broadcast_bucket(self, index: int) -> None:
        state, buckets, bucket_bytes = self.nccl_push
        weight_transfer.send_bucket(self.weight_group, state, buckets[index], bucket_bytes)

    def finish_nccl_push(self) -> None:
        self.nccl_push = None
        self.release_push_memory()

    def prepare_ipc_push(self, bucket_bytes: int) -> int | None:
        """Gather the full weights once and plan the buckets; returns their count on rank 0 (None elsewhere)."""
        state = full_state_dict(self.engine)
        if state is None:
            return None
        self.sender = weight_transfer.BucketSender(state, bucket_bytes)
        return len(self.sender.buckets)

    def ipc_bucket(self, index: int) -> dict:
        """Bucket `index` copied into the shared buffer: vLLM's IPC update format (rank 0)."""
        return self.sender.bucket(index)

    def finish_ipc_push(self) -> None:
        self.sender.close()
        self.sender = None
        self.release_push_memory()

    def save_pretrained(self, folder: str, tokenizer_path: str) -> str:
        from transformers import AutoTokenizer

        state = full_state_dict(self.engine)
        if state is not None:
            module = self.engine.module

            def write(tmp):
                if is_adapted(module):  # the merged model, and the adapter on its own in adapter/
                    plain_model(module.get_base_model().config, state).save_pretrained(tmp)
                    module.save_pretrained(os.path.join(tmp, "adapter"))
                else:
                    module.save_pretrained(tmp, state_dict={k: v.cpu() for k, v in state.items()})
                AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(tmp)

            write_atomically(folder, write)
        return folder


def mismatch(old_logp: torch.Tensor, rollout_logp: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per token, how far the engine that sampled (q) is from the learner's old policy (o): |o - q| (`logprob_gap`)
    and KL(rollout || learner) by k3 from the sampled tokens (`mismatch_kl`; `algo.correction.max_mismatch_kl`)."""
    return {"logprob_gap": (old_logp - rollout_logp).abs(), "mismatch_kl": kl_estimate(rollout_logp, old_logp, "k3")}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return ((values * mask).sum() / mask.sum().clamp(min=1)).item()


def _first_non_finite(logp, part: Experience, kl) -> str:
    named = {"policy logprobs": logp, "advantages": part.advantages, "reference logprobs": part.ref_logp, "kl": kl}
    for name, value in named.items():
        if value is not None and not torch.isfinite(value[part.mask.bool()]).all():
            return name
    return "the aggregated loss"
