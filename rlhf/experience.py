"""The batch that flows from the rollout engine through scoring to the learner, as padded tensors.

Shapes: B sequences, P prompt positions (left-padded), T completion positions (right-padded).
Prompt and completion side by side make the model input [B, P + T], and every completion token sits at the
same column for all rows, so one slice of the logits serves the whole batch.
"""

from dataclasses import dataclass, fields, replace

import torch

from rlhf.engines.base import Sample


@dataclass
class Experience:
    prompt_ids: torch.Tensor  # [B, P] long, left-padded
    prompt_mask: torch.Tensor  # [B, P] long
    completion_ids: torch.Tensor  # [B, T] long, right-padded
    mask: torch.Tensor  # [B, T] float: 1 on the model's completion tokens, the ones trained on
    rollout_logp: torch.Tensor  # [B, T] the rollout engine's logprobs of its own samples
    truncated: torch.Tensor  # [B] bool: the completion hit the token budget
    rewards: torch.Tensor | None = None  # [B] total reward (NaN = unscorable)
    objective_rewards: torch.Tensor | None = None  # [B, K] each objective's reward, before aggregation
    advantages: torch.Tensor | None = None  # [B, T]
    ref_logp: torch.Tensor | None = None  # [B, T] reference model's logprobs
    values: torch.Tensor | None = None  # [B, T] critic's value of the state before each token
    returns: torch.Tensor | None = None  # [B, T] critic targets (advantages + values, before any whitening)
    old_logp: torch.Tensor | None = None  # [B, T] the learner's logprobs before this batch's first update
    # [B, T] float: 1 on an episode's environment tokens (tool answers, replies): context, never trained on
    context_mask: torch.Tensor | None = None
    # [B, T] an episode's per-turn rewards (its environment's step_reward()) at each turn's last model token
    turn_rewards: torch.Tensor | None = None
    # [B, T] long: the segment of each completion token. 0 continues the row's prompt; k >= 1 is the k-th history an
    # agent rewrote (rlhf/agents/openai_agents.py), opened by its own prompt (context tokens): a sequence of its own,
    # which sees only its own tokens, positions from 0 (rlhf/training/segments.py). None: one sequence per row.
    segments: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        present = self.mask if self.context_mask is None else self.mask + self.context_mask
        return torch.cat([self.prompt_mask, present.long()], dim=1)

    def to(self, device) -> "Experience":
        """The same batch with every tensor on `device` (a learner's GPU); a no-op where they already are."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(self, **moved)

    def rank_share(self, rank: int, world: int) -> "Experience":
        """Rank `rank`'s contiguous share of the batch (data parallelism over `world` ranks)."""
        return self.split(self.size // world)[rank] if world > 1 else self

    def split(self, size: int) -> list["Experience"]:
        parts = []
        for start in range(0, self.size, size):
            sliced = {
                f.name: getattr(self, f.name)[start : start + size]
                for f in fields(self)
                if getattr(self, f.name) is not None
            }
            parts.append(replace(self, **sliced))
        return parts

    def keeping(self, rows: torch.Tensor) -> "Experience":
        """The same batch with the rows where `rows` [B] is False masked out of every loss."""
        return replace(self, mask=self.mask * rows[:, None])

    @classmethod
    def from_samples(cls, prompts: list[list[int]], samples: list[list[Sample]], pad_id: int) -> "Experience":
        """One row per sample; `samples[i]` are the completions of `prompts[i]`, groups kept contiguous. An episode
        (rlhf/agents/episodes.py) brings its own prompt tokens, and its `model_mask` splits its tokens into the
        trained (`mask`) and the environment's (`context_mask`); an agent's episode that rewrote its history brings
        `segment_ids` too (`segments`: each later segment a sequence of its own within the episode's row)."""
        rows = [(getattr(sample, "prompt_ids", None) or prompt, sample)
                for prompt, group in zip(prompts, samples) for sample in group]
        width_p = max(len(p) for p, _ in rows)
        width_t = max(1, max(len(s.completion_ids) for _, s in rows))
        batch = len(rows)
        prompt_ids = torch.full((batch, width_p), pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((batch, width_p), dtype=torch.long)
        completion_ids = torch.full((batch, width_t), pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width_t))
        rollout_logp = torch.zeros((batch, width_t))
        episodes = any(getattr(sample, "model_mask", None) is not None for _, sample in rows)
        context_mask = torch.zeros((batch, width_t)) if episodes else None
        truncated = torch.tensor([sample.truncated for _, sample in rows], dtype=torch.bool)
        rewarded_turns = any(getattr(sample, "turn_rewards", None) for _, sample in rows)
        turn_rewards = torch.zeros((batch, width_t)) if rewarded_turns else None
        segmented = any(any(getattr(sample, "segment_ids", None) or []) for _, sample in rows)
        segments = torch.zeros((batch, width_t), dtype=torch.long) if segmented else None
        for i, (prompt, sample) in enumerate(rows):
            n, t = len(prompt), len(sample.completion_ids)
            prompt_ids[i, width_p - n :] = torch.tensor(prompt)
            prompt_mask[i, width_p - n :] = 1
            if t:
                completion_ids[i, :t] = torch.tensor(sample.completion_ids)
                rollout_logp[i, :t] = torch.tensor(sample.logprobs)
                model = getattr(sample, "model_mask", None)
                mask[i, :t] = torch.tensor(model, dtype=torch.float32) if model is not None else 1.0
                if context_mask is not None:
                    context_mask[i, :t] = 1.0 - mask[i, :t]
                if segments is not None and getattr(sample, "segment_ids", None):
                    segments[i, :t] = torch.tensor(sample.segment_ids)
            for position, reward in getattr(sample, "turn_rewards", None) or []:
                turn_rewards[i, position] += reward
        return cls(prompt_ids, prompt_mask, completion_ids, mask, rollout_logp, truncated, context_mask=context_mask,
                   turn_rewards=turn_rewards, segments=segments)
