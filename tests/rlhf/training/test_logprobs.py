"""Packed-group logprobs equal the plain full-sequence forward, values and gradients (fp32)."""

import pytest
import torch

from rlhf.training import logprobs
from rlhf.training.logprobs import completion_logprobs


def plain_logprobs(model, input_ids, attention_mask, completion_len):
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits[:, -completion_len - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, input_ids[:, -completion_len:, None]).squeeze(-1)


def batch_of_groups(vocab: int):
    """Two groups of 3 rows (left-padded prompts of 5 and 3 tokens), plus a lone row; right-padded completions."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, vocab, (5,), generator=g), torch.randint(3, vocab, (3,), generator=g),
               torch.randint(3, vocab, (4,), generator=g)]
    rows, masks = [], []
    for prompt, copies in zip(prompts, (3, 3, 1)):
        for _ in range(copies):
            pad = 5 - len(prompt)
            completion = torch.randint(3, vocab, (4,), generator=g)
            rows.append(torch.cat([torch.zeros(pad, dtype=torch.long), prompt, completion]))
            masks.append(torch.cat([torch.zeros(pad, dtype=torch.long), torch.ones(len(prompt) + 4, dtype=torch.long)]))
    masks[1][-1] = 0  # one completion ends a token early (right padding)
    return torch.stack(rows), torch.stack(masks)


@pytest.mark.parametrize("row_tokens, checkpointing, attention", [
    (1024, False, "sdpa"),  # each group in one packed row
    (5 + 2 * 4, False, "sdpa"),  # at most 2 completions per packed row: the groups of 3 take two rows each
    (1024, True, "sdpa"),  # gradient checkpointing recomputes the packed forward
    (1024, False, "eager"),  # the implementation HF picks for models without SDPA support
])
def test_packed_forward_matches_the_plain_one(tiny_model, monkeypatch, row_tokens, checkpointing, attention):
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(logprobs, "PACKED_ROW_TOKENS", row_tokens)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation=attention)
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    ids, mask = batch_of_groups(model.config.vocab_size)
    completion_mask = mask[:, -4:].float()

    packed = completion_logprobs(model, ids, mask, 4)
    (packed * completion_mask).sum().backward()
    packed_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    plain = plain_logprobs(model, ids, mask, 4)
    (plain * completion_mask).sum().backward()

    torch.testing.assert_close(packed * completion_mask, plain * completion_mask, atol=1e-5, rtol=0)
    for got, want in zip(packed_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_one_token_completions(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    ids, mask = batch_of_groups(model.config.vocab_size)
    ids, mask = ids[:, :-3], mask[:, :-3].clone()
    mask[:, -1] = 1
    with torch.no_grad():
        torch.testing.assert_close(completion_logprobs(model, ids, mask, 1), plain_logprobs(model, ids, mask, 1),
                                   atol=1e-5, rtol=0)


def test_kernels_without_a_4d_mask_get_plain_rows_with_the_same_values(tiny_model, monkeypatch):
    # FlashAttention-2 takes no 4D mask (and cannot run on the CPU): the dispatch is what is checked here
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    ids, mask = batch_of_groups(model.config.vocab_size)
    completion_mask = mask[:, -4:].float()
    with torch.no_grad():
        packed = completion_logprobs(model, ids, mask, 4, temperature=0.7)
        monkeypatch.setattr(logprobs, "takes_4d_mask", lambda model: False)
        monkeypatch.setattr(logprobs.PackedGroups, "build", None)  # the plain path must not pack
        plain = completion_logprobs(model, ids, mask, 4, temperature=0.7)
    torch.testing.assert_close(plain * completion_mask, packed * completion_mask, atol=1e-5, rtol=0)
