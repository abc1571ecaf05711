"""Start every role's actor with its CPU reservation and thread count."""

from dataclasses import asdict, dataclass

import ray

from actors.critic import CriticActor
from actors.policy import PolicyActor
from actors.reference import ReferenceActor
from actors.reward import RewardActor
from actors.reward_model import RewardModelActor
from actors.rollout import RolloutActor
from rlhf.config import Config
from rlhf.engines.vllm_engine import engine_environment
from rlhf.models.resolve import cache_root
from rlhf.rewards import REWARD_AGGREGATIONS


@dataclass
class Actors:
    rollouts: list
    reward: object | None  # None when every objective is a reward model
    reward_models: dict  # objective label -> RewardModelActor
    reference: object | None  # None when neither a KL term nor the ratio needs the reference model
    policy: object | None  # None only in scripts that start no learner
    critic: object | None  # None unless algo.use_critic

    def kill(self) -> None:
        """Free the actors' resources now rather than when their handles are collected."""
        for actor in [*self.rollouts, self.reward, *self.reward_models.values(), self.reference, self.policy,
                      self.critic]:
            if actor is not None:
                ray.kill(actor)


def _threads(n: int) -> dict[str, str]:
    # Each actor gets as many threads as its share of the cores: oversubscription costs 5-10x on small CPUs.
    return {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n), "TOKENIZERS_PARALLELISM": "false"}


def launch_actors(cfg: Config, model_path: str, learners: bool = True) -> Actors:
    """Every role's actor; `learners=False` starts only generation and scoring (for offline scripts)."""
    batch_size = cfg.prompts_per_step * cfg.algo.group_size
    rollout_env = {**_threads(cfg.rollout.threads),
                   **engine_environment(cfg.rollout.threads, cfg.rollout.kv_cache_gib)}
    rollout = RolloutActor.options(num_cpus=cfg.rollout.num_cpus, runtime_env={"env_vars": rollout_env}).remote(
        cfg.rollout.engine, model_path, cfg.rollout.dtype,
        cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens, cfg.seed,
    )
    reward_env = {"env_vars": _threads(cfg.reward_actor.threads)}
    reward = None
    if cfg.reward.functions:
        reward = RewardActor.options(num_cpus=cfg.reward_actor.num_cpus, runtime_env=reward_env).remote(
            [asdict(f) for f in cfg.reward.functions], cfg.reward.timeout_s)
    reward_models = {
        m.label: RewardModelActor.options(num_cpus=cfg.reward_actor.num_cpus, runtime_env=reward_env).remote(
            m.path, m.batch_size, m.max_length)
        for m in cfg.reward.models
    }
    if not learners:
        return Actors([rollout], reward, reward_models, None, None, None)
    reference = None
    if cfg.algo.kl_beta > 0 or cfg.algo.kl_reward_beta > 0 or cfg.algo.ratio_against == "reference":
        reference = ReferenceActor.options(
            num_cpus=cfg.reference.num_cpus, runtime_env={"env_vars": _threads(cfg.reference.threads)}
        ).remote(model_path, cfg.reference.micro_batch_size, cfg.rollout.temperature)
    # DeepSpeed JIT-builds its CPU communication op once (about a minute); keep the build in our own cache.
    policy_env = {**_threads(cfg.train.threads), "TORCH_EXTENSIONS_DIR": str(cache_root() / "torch_extensions")}
    policy = PolicyActor.options(num_cpus=cfg.train.num_cpus, runtime_env={"env_vars": policy_env}).remote(
        model_path, cfg.train, cfg.algo, batch_size, cfg.rollout.max_new_tokens, cfg.rollout.temperature, cfg.seed)
    critic = None
    if cfg.algo.use_critic:
        critic_env = {**_threads(cfg.critic.threads), "TORCH_EXTENSIONS_DIR": policy_env["TORCH_EXTENSIONS_DIR"]}
        critic = CriticActor.options(num_cpus=cfg.critic.num_cpus, runtime_env={"env_vars": critic_env}).remote(
            cfg.critic.model_path or model_path, cfg.critic, cfg.algo, batch_size, cfg.seed, value_heads(cfg))
    return Actors([rollout], reward, reward_models, reference, policy, critic)


def value_heads(cfg: Config) -> int:
    """One value head per objective when the aggregation works on per-objective advantages (PAMA with PPO)."""
    per_objective = REWARD_AGGREGATIONS.get(cfg.reward.aggregation).per_objective_advantages
    return len(cfg.reward.objective_labels()) if per_objective else 1
