"""The config's schema: one dataclass per section of `conf/`. The values live in `conf/`; these classes only name
and type them (a default here only where an entry of a list cannot take one from `conf/`)."""

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING


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
    truncate: bool = MISSING  # SFT: a demonstration over the token budget is cut (and counted) instead of bad_rows


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
    drain_timeout_s: float = MISSING  # without partial rollouts: a push's wait for the running requests to finish
    sync_bucket_mb: float = MISSING
    mode: str = MISSING  # sync | one_step_off | async (rlhf/rollout/schedules.py)
    max_staleness: int = MISSING  # async: the most policy updates a trained token's weights may lag the learner's
    push_every: int = MISSING  # async: policy updates between weight pushes
    partial_rollouts: bool = MISSING  # async: a push interrupts running requests, which go on with the new weights
    advance_s: float = MISSING  # async: the longest slice an engine generates before the driver hears from it
    # async: the rollout correction when algo.correction.mode is none and the samples are off-policy (loading.py)
    async_correction: CorrectionConfig = MISSING


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
    bf16: Optional[bool] = MISSING  # None: bf16 on a GPU, measured on the CPU (rlhf/precision.py)
    offload_optimizer: bool = MISSING
    attn_implementation: str = MISSING
    gradient_checkpointing: bool = MISSING
    lora: LoraConfig = MISSING
    ranks: int = MISSING
    num_cpus: float = MISSING
    num_gpus: float = MISSING
    threads: int = MISSING


@dataclass
class PolicyTrainConfig(TrainConfig):
    # SFT: a micro-batch holds at most this many token positions (rows x the longest, padding included); None: micro-
    # batches of micro_batch_size sequences
    max_tokens_per_micro_batch: Optional[int] = MISSING


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
    pass_threshold: Optional[float] = MISSING  # None: the pass objective's own, if it has one (rlhf/passing.py)

    def objective_labels(self, reward: "RewardConfig") -> list[str]:
        """What eval scores: its own reward functions, or the run's objectives."""
        return [f.label or f.name for f in self.rewards] if self.rewards else reward.objective_labels()

    def metric_names(self, reward: "RewardConfig") -> list[str]:
        k = [f"eval/pass@{self.samples}"] if self.samples > 1 else []
        return [*(f"eval/{label}" for label in self.objective_labels(reward)), "eval/pass@1", *k, "eval/length"]


@dataclass
class EnvConfig:
    """Multi-turn episodes (rlhf/agents/): on when a factory or tools are named."""
    # import path of a TRL environment factory (a callable returning an instance, one per episode), or a dict of them
    # (name -> path: TRL's multi-environment mode, routed by the rows' `environment` column)
    factory: Optional[Any] = MISSING
    tools: list[str] = MISSING  # import paths of tool functions (TRL's shape), shared by every episode
    reply: Optional[str] = MISSING  # the environment's method that answers a turn without a tool call (ours)
    max_turns: int = MISSING
    max_tool_calls: int = MISSING
    max_parallel_calls: Optional[int] = MISSING  # tool calls of one turn that run; more are answered with an error
    tool_timeout_s: float = MISSING
    tool_workers: int = MISSING  # sync tool calls running at once (a call that never returns keeps its worker)
    max_tool_response_tokens: int = MISSING
    tool_response_truncate: str = MISSING  # head | tail | middle: what of a longer answer is kept
    max_episode_tokens: int = MISSING  # every token after the prompt: model and environment
    tool_format: str = MISSING  # a vLLM tool parser (hermes, ...)
    tools_prompt: str = MISSING  # auto | template | system
    allow_unsandboxed_python: bool = MISSING
    python_cpu_s: float = MISSING
    python_memory_mb: int = MISSING
    python_output_bytes: int = MISSING

    agent: Optional[str] = MISSING  # import path of an agent written against the OpenAI client: run(client, row)
    agent_timeout_s: float = MISSING  # one agent episode's wall clock
    agent_host: str = MISSING  # where the run's OpenAI endpoint listens (loopback by default)

    @property
    def enabled(self) -> bool:
        return bool(self.factory or self.tools or self.agent)


@dataclass
class SftConfig:
    """Supervised fine-tuning (rlhf/sft/): `algo=sft` trains on `data` for `steps` steps; `sft.steps` > 0 warm-starts
    an RL run on `sft.data` first."""
    data: Optional[dict[str, Any]] = MISSING  # the warm start's demonstrations, as overrides of `data` (None: `data`)
    steps: int = MISSING  # warm start: SFT steps before the RL steps (0: none; algo=sft counts `steps`)
    lr: float = MISSING  # warm start's learning rate (algo=sft: train.lr)
    batch_size: int = MISSING  # demonstrations per optimizer step
    assistant_only_loss: bool = MISSING  # `messages`: only the assistant turns are targets
    completion_only_loss: bool = MISSING  # `prompt` + `completion`: only the completion is a target
    packing: bool = MISSING  # padding-free: the micro-batch's sequences in one row (flash-attention only)
    reference: str = MISSING  # warm start: the RL reference is the warm-started policy | base (the model folder)


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
    train: PolicyTrainConfig = MISSING
    critic: CriticConfig = MISSING
    reference: ReferenceConfig = MISSING
    reward_actor: RewardActorConfig = MISSING
    logging: LoggingConfig = MISSING
    ray: RayConfig = MISSING
    checkpoint: CheckpointConfig = MISSING
    eval: EvalConfig = MISSING
    env: EnvConfig = MISSING
    sft: SftConfig = MISSING
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
