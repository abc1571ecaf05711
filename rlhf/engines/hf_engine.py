"""Transformers `generate` behind the engine contract: slower, but runs wherever transformers does."""

import torch
from safetensors.torch import load_file

from rlhf.devices import resolve_device, resolve_dtype
from rlhf.engines.base import EngineSettings, GenerationEngine, Sample, SamplingSettings
from rlhf.models.loading import load_model
from rlhf.training import weight_transfer


class HFEngine(GenerationEngine):
    def __init__(self, model_path: str, settings: EngineSettings, seed: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = resolve_device("rollout")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = load_model(AutoModelForCausalLM, model_path, resolve_dtype(settings.dtype, self.device), "sdpa",
                                self.device).eval()
        self.sleeps = settings.sleep_mode and self.device.type == "cuda"
        torch.manual_seed(seed)

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Sample]]:
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=not sampling.greedy,
            **({} if sampling.greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}),
            max_new_tokens=sampling.max_new_tokens,
            min_new_tokens=sampling.max_new_tokens if sampling.ignore_eos else None,
            num_return_sequences=n, output_scores=True, return_dict_in_generate=True, pad_token_id=pad,
        )
        generated = out.sequences[:, width:]
        # scores are the processed logits (temperature and top-p applied): the sampled distribution
        logprobs = torch.stack(out.scores, dim=1).float().log_softmax(-1)
        token_logprobs = logprobs.gather(-1, generated.unsqueeze(-1)).squeeze(-1).cpu()
        generated = generated.cpu()
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
        state = load_file(f"{folder}/model.safetensors", device=str(self.device))
        self.model.load_state_dict(state, strict=True)

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state, strict=True)  # copies onto the model's device

    def begin_weight_update(self) -> None:
        self.updated = set()

    def load_bucket(self, bucket: dict) -> None:
        params = self.model.state_dict()  # shares storage with the parameters
        buffer = weight_transfer.open_bucket(bucket, self.device)
        for name, tensor in weight_transfer.unpack(buffer, bucket):
            params[name].copy_(tensor)
            self.updated.add(name)
        torch.cuda.current_stream().synchronize()  # done reading: the learner may refill the buffer
        del buffer

    def finish_weight_update(self) -> None:
        missing = set(self.model.state_dict()) - self.updated
        if missing:
            raise RuntimeError(f"a CUDA-IPC push left {len(missing)} weights unloaded, e.g. {sorted(missing)[:3]}")

    def join_nccl(self, host: str, port: int, rank: int, world: int, bucket_bytes: int) -> None:
        self.weight_group, self.bucket_bytes = weight_transfer.join_nccl_group(host, port, rank, world), bucket_bytes

    def leave_nccl(self) -> None:
        self.weight_group.destroy()
        self.weight_group = None

    def receive_bucket(self, bucket: dict) -> None:
        params = self.model.state_dict()
        for name, tensor in weight_transfer.receive_bucket(self.weight_group, bucket, self.bucket_bytes, self.device):
            params[name].copy_(tensor)
            self.updated.add(name)

    def sleep(self) -> None:
        if self.sleeps:  # transformers keeps no KV cache between calls: the weights are what there is to free
            self.model.to("cpu")
            torch.cuda.empty_cache()

    def wake_up(self, tags: list[str] | None = None) -> None:
        if self.sleeps and (tags is None or "weights" in tags):
            self.model.to(self.device)
