"""Transformers `generate` behind the engine contract: slower, but runs wherever transformers does."""

import torch
from safetensors.torch import load_file

from rlhf.engines.base import GenerationEngine, Sample, SamplingSettings


class HFEngine(GenerationEngine):
    def __init__(self, model_path: str, dtype: str, seed: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
        torch.manual_seed(seed)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Sample]]:
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
            temperature=sampling.temperature, top_p=sampling.top_p, top_k=0, max_new_tokens=sampling.max_new_tokens,
            min_new_tokens=sampling.max_new_tokens if sampling.ignore_eos else None,
            num_return_sequences=n, output_scores=True, return_dict_in_generate=True, pad_token_id=pad,
        )
        generated = out.sequences[:, width:]
        # scores are the processed logits (temperature and top-p applied): the sampled distribution
        logprobs = torch.stack(out.scores, dim=1).float().log_softmax(-1)
        token_logprobs = logprobs.gather(-1, generated.unsqueeze(-1)).squeeze(-1)
        samples = []
        for row in range(generated.shape[0]):
            ids = generated[row].tolist()
            length = ids.index(eos) + 1 if eos in ids else len(ids)
            samples.append(Sample(
                completion_ids=ids[:length],
                logprobs=token_logprobs[row, :length].tolist(),
                text=self.tokenizer.decode(ids[:length], skip_special_tokens=True),
                truncated=eos not in ids,
            ))
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    def load_weights(self, folder: str) -> None:
        state = load_file(f"{folder}/model.safetensors")
        self.model.load_state_dict(state, strict=True)

    def load_tensors(self, weights: list) -> None:
        self.model.load_state_dict(dict(weights), strict=True)

    def sleep(self) -> None:
        pass  # nothing to free: transformers keeps no KV cache between calls

    def wake_up(self) -> None:
        pass
