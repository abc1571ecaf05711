"""Log-probabilities of completion tokens under a causal LM, computed only where they are needed."""

import torch


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_len: int,
                        temperature: float = 1.0) -> torch.Tensor:
    """[B, T] logprobs of the last `completion_len` tokens of `input_ids`, each given everything before it.

    Rows of a group share their prompt, so each distinct prompt goes through the model once and its key/value
    cache is fanned out to its rows, which then run only their completion tokens (a group of 4 with 200 prompt
    and 32 completion tokens: 328 token positions instead of 928; gradients flow back through the shared cache).
    Prompts are left-padded, so positions are counted from each row's first real token. Only completion
    positions go through the LM head, and the logprob is the target's logit minus the log-sum-exp, which avoids
    keeping a second [B, T, V] tensor of log-softmax values. Logits are divided by the sampling temperature so
    the result is the distribution the engine sampled.
    """
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    inner = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
    if inner.training and getattr(inner, "is_gradient_checkpointing", False):  # checkpointing disables the cache
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       logits_to_keep=completion_len + 1).logits[:, :-1]
    else:
        logits = _shared_prompt_logits(model, input_ids, attention_mask, position_ids, completion_len)
    logits = logits.float() / temperature
    targets = input_ids[:, -completion_len:]
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _shared_prompt_logits(model, input_ids, attention_mask, position_ids, completion_len: int) -> torch.Tensor:
    """[B, T, V] next-token logits at the positions that predict the completion tokens."""
    prompt_len = input_ids.shape[1] - completion_len
    prompt_rows = torch.cat([input_ids[:, :prompt_len], attention_mask[:, :prompt_len]], dim=1)
    unique, row_prompt = torch.unique(prompt_rows, dim=0, return_inverse=True)
    unique_ids, unique_mask = unique[:, :prompt_len], unique[:, prompt_len:]
    prompt = model(input_ids=unique_ids, attention_mask=unique_mask,
                   position_ids=(unique_mask.cumsum(-1) - 1).clamp(min=0), use_cache=True, logits_to_keep=1)
    cache = prompt.past_key_values
    cache.batch_select_indices(row_prompt)
    completion = model(input_ids=input_ids[:, prompt_len:], attention_mask=attention_mask,
                       position_ids=position_ids[:, prompt_len:], past_key_values=cache, use_cache=True,
                       logits_to_keep=completion_len)
    # the last prompt position predicts the first completion token; each completion position the next one
    return torch.cat([prompt.logits[row_prompt], completion.logits[:, :-1]], dim=1)


@torch.no_grad()
def batch_logprobs(model, experience, micro_batch_size: int, temperature: float) -> torch.Tensor:
    """[B, T] logprobs of a whole batch's completions, micro-batch by micro-batch, 0 past each completion's end."""
    return torch.cat([
        completion_logprobs(model, part.input_ids, part.attention_mask, part.completion_ids.shape[1], temperature)
        for part in experience.split(micro_batch_size)
    ]) * experience.mask
