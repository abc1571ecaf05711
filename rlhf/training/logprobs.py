"""Log-probabilities of completion tokens under a causal LM, computed only where they are needed."""

import torch


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                        temperature: float = 1.0) -> torch.Tensor:
    """[B, T] logprobs of the last `completion_len` tokens of `input_ids`, each given everything before it.

    Prompts are left-padded, so positions are counted from each row's first real token. Only the T + 1 last
    positions go through the LM head (not the whole sequence), and the logprob is the target's logit minus
    the log-sum-exp, which avoids keeping a second [B, T, V] tensor of log-softmax values.
    Logits are divided by the sampling temperature so the result is the distribution the engine sampled.
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        logits_to_keep=completion_len + 1,
    ).logits[:, :-1]
    logits = logits.float() / temperature
    targets = input_ids[:, -completion_len:]
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def batch_logprobs(model, experience, micro_batch_size: int, temperature: float) -> torch.Tensor:
    """[B, T] logprobs of a whole batch's completions, micro-batch by micro-batch, 0 past each completion's end."""
    return torch.cat([
        completion_logprobs(model, part.input_ids, part.attention_mask, part.completion_ids.shape[1], temperature)
        for part in experience.split(micro_batch_size)
    ]) * experience.mask
