"""vLLM behind the engine contract, in-process (one engine per Ray actor; vLLM's own Ray executor refuses CPU).

The caller sets the environment before this module is imported (see `engine_environment`).
"""

from rlhf.engines.base import GenerationEngine, Sample, SamplingSettings


def engine_environment(threads: int) -> dict[str, str]:
    return {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # keep the engine in this process: starts in seconds
        "OMP_NUM_THREADS": str(threads),
    }


class VLLMEngine(GenerationEngine):
    def __init__(self, model_path: str, dtype: str, max_model_len: int, seed: int, kv_cache_gib: float,
                 block_size: int):
        from vllm import LLM

        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            # without an explicit size vLLM-CPU reserves most of the RAM; fractions of a GiB are fine here
            # (the legacy VLLM_CPU_KVCACHE_SPACE variable takes whole GiB only)
            kv_cache_memory_bytes=int(kv_cache_gib * 1024**3),
            # The n samples of a prompt are separate requests that share its cached prefill only in whole blocks:
            # with vLLM-CPU's 128-token blocks most prompts here (80-150 tokens) were prefilled n times
            block_size=block_size,
            enforce_eager=True,
            distributed_executor_backend="uni",
            # logprobs of the distribution actually sampled (temperature applied), as the learner computes them
            logprobs_mode="processed_logprobs",
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Sample]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # vLLM seeds the i-th sample of a request with seed + i: prompts get disjoint seed ranges
        params = [SamplingParams(
            n=n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens,
            logprobs=0, seed=None if sampling.seed is None else sampling.seed + i * n, ignore_eos=sampling.ignore_eos,
        ) for i in range(len(prompts))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        groups = []
        for output in outputs:
            group = []
            for c in output.outputs:
                ids = list(c.token_ids)
                logprobs = [step[token].logprob for step, token in zip(c.logprobs, ids)]
                group.append(Sample(ids, logprobs, c.text, truncated=c.finish_reason == "length"))
            groups.append(group)
        return groups

    def load_weights(self, folder: str) -> None:
        # model.load_weights fails on CPU (vLLM repacks linear weights at load); a reload from a folder works.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": folder, "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()

    # GPU weight-sync routes (UNTESTED: no GPU here; on CPU model.load_weights fails and sleep mode is absent).
    def load_tensors(self, weights: list) -> None:
        """Load (name, tensor) pairs straight into the model (the in-process executor runs the callable here)."""
        self.llm.collective_rpc(lambda worker: worker.model_runner.model.load_weights(weights))
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        self.llm.sleep(level=1)

    def wake_up(self) -> None:
        self.llm.wake_up()
