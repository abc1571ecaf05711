"""Start every role's actors on their placement, with their CPU reservation and thread count."""

import re
import uuid
from dataclasses import asdict, dataclass

import ray

from actors.critic import CriticActor
from actors.learner_group import LearnerGroup
from actors.placement import Placement, RoleDemand
from actors.policy import PolicyActor
from actors.reference import PolicyReference, Reference, ReferenceActor
from actors.reward import RewardActor
from actors.reward_model import RewardModelActor
from actors.rollout import RolloutActor
from rlhf.config import Config
from rlhf.console import actor_environment
from rlhf.engines.base import EngineSettings
from rlhf.engines.vllm_engine import engine_environment
from rlhf.models.resolve import cache_root
from rlhf.rewards import REWARD_AGGREGATIONS


class ActorBuildError(RuntimeError):
    """An actor's constructor raised: a configuration error, not a crash (a restart would fail the same way)."""


def build_failure(err: BaseException) -> str | None:
    """The exception an actor's constructor raised ("ValueError: ..."), if `err` says that is how the actor died."""
    if not (isinstance(err, ray.exceptions.RayActorError) and err.actor_init_failed):
        return None
    lines = err.error_msg.rstrip().splitlines()
    # the remote traceback ends with the exception's own lines, from "SomeError: ..." on
    starts = [i for i, line in enumerate(lines) if re.match(r"[A-Za-z_][\w.]*(Error|Exception)\b", line)]
    return " ".join(line.strip() for line in lines[starts[-1] if starts else -1:])


def wait_until_built(actors: dict[str, object], placement: Placement, every=None) -> None:
    """Wait for each actor (name -> handle) to answer; the first whose constructor raised stops the run now, named.
    If any fails, all of them (or `every` actor started so far) and their placement are removed (the Ray cluster may
    outlive this run)."""
    names = {actor.ready.remote(): name for name, actor in actors.items()}
    pending = list(names)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as err:
                cause = build_failure(err)
                if cause is None:
                    raise
                raise ActorBuildError(f"the {names[done[0]]} actor could not be built: {cause} (every actor's output is "
                                      "in <output_dir>/logs/)") from err
    except BaseException:
        for actor in every or actors.values():
            ray.kill(actor, no_restart=True)
        placement.remove()
        raise


@dataclass
class Actors:
    rollouts: list
    reward: object | None  # None when every objective is a reward model
    reward_models: dict  # objective label -> RewardModelActor
    reference: Reference | None  # None when neither a KL term nor the ratio needs the reference model
    policy: LearnerGroup | None  # None only in scripts that start no learner
    critic: LearnerGroup | None  # None unless algo.critic.enabled
    placement: Placement | None = None
    eval_reward: object | None = None  # the eval.rewards functions, when eval has its own
    # vLLM engines share a GPU with other actors: each must start while nothing else on its GPU allocates
    engines_start_alone: bool = False


    def stateless(self) -> list:
        """The actors Ray may restart after a crash: they hold nothing a restart loses but the weights."""
        restartable_reference = self.reference.restartable() if self.reference else []
        return [*self.rollouts, self.reward, self.eval_reward, *self.reward_models.values(), *restartable_reference]

    def kill(self) -> None:
        """Free the actors' resources now rather than when their handles are collected. Engines shut down first
        (bounded): a tensor-parallel vLLM engine's worker processes remove their shared memory only then."""
        closing = [rollout.close.remote() for rollout in self.rollouts]
        ray.wait(closing, num_returns=len(closing), timeout=30)
        for actor in [*self.rollouts, self.reward, self.eval_reward, *self.reward_models.values()]:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        for group in (self.policy, self.critic, self.reference):
            if group is not None:
                group.kill()
        if self.placement is not None:
            self.placement.remove()


# An actor that holds no GPU share must see no GPU. Ray 2.60 leaves CUDA_VISIBLE_DEVICES as the node has it for such
# an actor (`set_visible_accelerator_ids` skips actors without accelerator ids unless
# RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1): it would see every GPU of its node, DeepSpeed would move a "CPU" learner
# to cuda:LOCAL_RANK and vLLM would put a "CPU" engine on GPU 0. DeepSpeed is told the CPU outright.
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}


def _threads(n: int, cfg: Config) -> dict[str, str]:
    # Each actor gets as many threads as its share of the cores: oversubscription costs 5-10x on small CPUs.
    env = {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n), "TOKENIZERS_PARALLELISM": "false"}
    policy = wait_policy(cfg)
    return {**env, "OMP_WAIT_POLICY": policy.upper()} if policy != "default" else env


def wait_policy(cfg: Config) -> str:
    """How idle OpenMP threads wait. Spinning (OpenMP's default) is fastest while one role has the cores to
    itself; when roles compute at the same time (rollout.mode one_step_off or async) spinning threads steal the cores
    from the busy ones: passive (sleeping) waits made the overlapped step 2.9x faster here (17 s -> 5.9 s)."""
    if cfg.omp_wait_policy == "auto":
        return "passive" if cfg.rollout.mode != "sync" else "default"
    return cfg.omp_wait_policy


def needs_reference(cfg: Config) -> bool:
    return cfg.algo.kl.beta > 0 or cfg.algo.kl.reward_beta > 0 or cfg.algo.loss.ratio_against == "reference"


def needs_reference_actor(cfg: Config) -> bool:
    """With LoRA the policy scores the reference itself (its base model, adapter off): no copy is loaded. After a warm
    start whose policy is the reference (sft.reference=policy) the policy actor holds that copy."""
    warm_reference = cfg.sft.steps > 0 and cfg.sft.reference == "policy"
    return needs_reference(cfg) and not cfg.train.lora.rank and not warm_reference


def role_demands(cfg: Config, learners: bool) -> dict[str, RoleDemand]:
    """Each role's actor count and what each actor reserves (the reward-function actor never takes a GPU)."""
    demands = {"rollout": RoleDemand(cfg.rollout.engines, cfg.rollout.num_cpus, cfg.rollout.num_gpus),
               "reward": RoleDemand(int(bool(cfg.reward.functions)), cfg.reward_actor.num_cpus),
               "reward_model": RoleDemand(len(cfg.reward.models), cfg.reward_actor.num_cpus, cfg.reward_actor.num_gpus),
               "eval_reward": RoleDemand(int(bool(cfg.eval.every and cfg.eval.rewards)), cfg.reward_actor.num_cpus)}
    if learners:
        demands["policy"] = RoleDemand(cfg.train.ranks, cfg.train.num_cpus, cfg.train.num_gpus)
        if needs_reference_actor(cfg):
            demands["reference"] = RoleDemand(cfg.reference.ranks, cfg.reference.num_cpus, cfg.reference.num_gpus)
        if cfg.algo.critic.enabled:
            demands["critic"] = RoleDemand(cfg.critic.ranks, cfg.critic.num_cpus, cfg.critic.num_gpus)
    return {role: d for role, d in demands.items() if d.count}


def engine_sleeps(cfg: Config) -> bool:
    """vLLM sleep mode: asked for, or (null) when the engines share their GPU with the learner and nothing generates
    while it trains. The engine turns it on only where it computes on CUDA."""
    if cfg.rollout.sleep_mode is not None:
        return cfg.rollout.sleep_mode
    shares_gpu = cfg.placement.layout == "colocated" and cfg.rollout.num_gpus > 0 and cfg.train.num_gpus > 0
    return shares_gpu and cfg.rollout.mode == "sync"


def launch_actors(cfg: Config, model_path: str, learners: bool = True) -> Actors:
    """Every role's actors; `learners=False` starts only generation and scoring (for offline scripts)."""
    placement = Placement(cfg.placement.layout, role_demands(cfg, learners), cfg.placement.timeout_s,
                          cfg.placement.bundles, dict(cfg.placement.beside), cfg.placement.role_strategy,
                          cfg.rollout.weight_sync)
    restarts = {"max_restarts": cfg.fault_tolerance.max_restarts}
    run_tag = uuid.uuid4().hex[:8]

    def place(role: str, index: int, env: dict) -> dict:
        # named, so that operators (and tests) can find e.g. "rollout-0-<tag>" in the cluster
        demand = placement.demands[role]
        if not demand.num_gpus:
            env = {**env, **NO_GPU_ENV}
        env = {**env, **actor_environment(str(cfg.output_dir), role, index, cfg.logging.console)}
        return {"num_cpus": demand.num_cpus, "num_gpus": demand.num_gpus, "runtime_env": {"env_vars": env},
                "name": f"{role}-{index}-{run_tag}", "scheduling_strategy": placement.strategy(role, index)}

    # an NCCL group that vLLM shares with the trainer needs NCCL's cuMem allocator off on both sides
    nccl_env = {"NCCL_CUMEM_ENABLE": "0"} if cfg.rollout.weight_sync == "nccl" else {}
    rollout_env = {**_threads(cfg.rollout.threads, cfg),
                   **engine_environment(cfg.rollout.threads, cfg.rollout.tensor_parallel_size), **nccl_env}
    engine_settings = EngineSettings(
        dtype=cfg.rollout.dtype, max_model_len=cfg.data.max_prompt_tokens + cfg.completion_budget(),
        kv_cache_gib=cfg.rollout.kv_cache_gib, block_size=cfg.rollout.block_size,
        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization, sleep_mode=engine_sleeps(cfg),
        weight_transfer={"auto": "ipc", "cuda_ipc": "ipc", "nccl": "nccl"}.get(cfg.rollout.weight_sync),
        tensor_parallel_size=cfg.rollout.tensor_parallel_size, staging_dir=cfg.rollout.sync_dir)
    rollouts = {}
    # vLLM counts every drop of its GPU's free memory during its start-up as its own and asserts nothing else freed
    # any (vllm/utils/mem_utils.py, v1/worker/gpu_worker.py): engines that share a GPU start one after another, and
    # before anything else on it
    waves = placement.start_waves("rollout") if cfg.rollout.engine == "vllm" else None
    for wave in waves or [range(cfg.rollout.engines)]:
        started = {i: RolloutActor.options(**place("rollout", i, rollout_env), **restarts).remote(
            cfg.rollout.engine, model_path, engine_settings, cfg.seed + i) for i in wave}
        rollouts.update(started)
        if waves:
            wait_until_built({f"rollout-{i}": r for i, r in started.items()}, placement, every=rollouts.values())
    rollouts = [rollouts[i] for i in range(cfg.rollout.engines)]
    reward_env = _threads(cfg.reward_actor.threads, cfg)
    reward = None
    if cfg.reward.functions:
        reward = RewardActor.options(**place("reward", 0, reward_env), **restarts).remote(
            [asdict(f) for f in cfg.reward.functions], cfg.reward.timeout_s)
    reward_models = {
        m.label: RewardModelActor.options(**place("reward_model", i, reward_env), **restarts).remote(
            m.path, m.batch_size, m.max_length, dict(cfg.data.chat_template_kwargs or {}))
        for i, m in enumerate(cfg.reward.models)
    }
    eval_reward = None
    if cfg.eval.every and cfg.eval.rewards:
        eval_reward = RewardActor.options(**place("eval_reward", 0, reward_env), **restarts).remote(
            [asdict(f) for f in cfg.eval.rewards], cfg.reward.timeout_s)
    named = {**{f"rollout-{i}": r for i, r in enumerate(rollouts)}, **({"reward": reward} if reward else {}),
             **({"eval reward": eval_reward} if eval_reward else {}),
             **{f"reward model {label!r}": m for label, m in reward_models.items()}}
    if not learners:
        wait_until_built(named, placement)
        return Actors(rollouts, reward, reward_models, None, None, None, placement, eval_reward, bool(waves))

    # DeepSpeed JIT-builds its CPU communication op once (about a minute); keep the build in our own cache.
    extensions = {"TORCH_EXTENSIONS_DIR": str(cache_root() / "torch_extensions")}
    reference_ranks = []
    if needs_reference_actor(cfg):
        ranks = cfg.reference.ranks
        reference_ranks = [
            ReferenceActor.options(**place("reference", i, {**_threads(cfg.reference.threads, cfg), **extensions}),
                                   **(restarts if ranks == 1 else {}))
            .remote(model_path, cfg.reference.micro_batch_size, cfg.rollout.temperature, ranks, cfg.train.bf16,
                    cfg.train.attn_implementation)
            for i in range(ranks)
        ]
    batch_size = cfg.prompts_per_step * cfg.algo.group_size
    policy_ranks = [
        PolicyActor.options(**place("policy", i, {**_threads(cfg.train.threads, cfg), **extensions, **nccl_env}))
        .remote(model_path, cfg.train, cfg.algo, batch_size, cfg.completion_budget(), cfg.rollout.temperature,
                cfg.seed)
        for i in range(cfg.train.ranks)
    ]
    critic_ranks = [
        CriticActor.options(**place("critic", i, {**_threads(cfg.critic.threads, cfg), **extensions}))
        .remote(cfg.critic.model_path or model_path, cfg.critic, cfg.algo, batch_size, cfg.seed, value_heads(cfg))
        for i in range(cfg.critic.ranks if cfg.algo.critic.enabled else 0)
    ]
    # every actor is built side by side; the learner groups then join their ranks
    for role, ranks in {"reference": reference_ranks, "policy": policy_ranks, "critic": critic_ranks}.items():
        named.update({f"{role}-{i}": actor for i, actor in enumerate(ranks)})
    wait_until_built(named, placement)
    policy = LearnerGroup(policy_ranks)
    reference = Reference(reference_ranks) if reference_ranks else None
    if needs_reference(cfg) and not reference_ranks:
        reference = PolicyReference(policy)
    critic = LearnerGroup(critic_ranks) if critic_ranks else None
    return Actors(rollouts, reward, reward_models, reference, policy, critic, placement, eval_reward, bool(waves))


def value_heads(cfg: Config) -> int:
    """One value head per objective when the aggregation works on per-objective advantages (PAMA with PPO)."""
    per_objective = REWARD_AGGREGATIONS.get(cfg.reward.aggregation).per_objective_advantages
    return len(cfg.reward.objective_labels()) if per_objective else 1
