"""Settings valid one by one that do not work together."""

from rlhf.algorithms import ADVANTAGE_ESTIMATORS, BATCH_TRANSFORMS
from rlhf.config.schema import Config
from rlhf.rewards.aggregation import REWARD_AGGREGATIONS


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
