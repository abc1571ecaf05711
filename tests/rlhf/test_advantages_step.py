"""The driver's advantage step (`add_advantages`) with settings that interact: pure tensors, no actors."""

import torch

from rlhf.algorithms import ADVANTAGE_ESTIMATORS
from rlhf.algorithms.transforms import transforms_by_stage
from rlhf.config import compose_config, load_config
from rlhf.driver import add_advantages, training_batch
from rlhf.experience import Experience
from rlhf.rewards import REWARD_AGGREGATIONS


def batch(objective_rewards: torch.Tensor) -> Experience:
    size, length = objective_rewards.shape[0], 3
    mask = torch.ones(size, length)
    mask[0, 2] = 0
    return Experience(torch.ones(size, 2, dtype=torch.long), torch.ones(size, 2, dtype=torch.long),
                      torch.ones(size, length, dtype=torch.long), mask, torch.zeros(size, length),
                      torch.zeros(size, dtype=torch.bool), rewards=objective_rewards.mean(-1),
                      objective_rewards=objective_rewards)


def test_pama_with_whitening_keeps_noon_advantages_and_a_gradient():
    # algo=ppo's preset whitens; whitened after PAMA's Noon clipping, advantages went negative again, and with
    # apply=scalar (one s* for the batch) every token's advantage became 0
    cfg = load_config(compose_config("output_dir=/tmp/x", "experiment=pama", "algo.group_size=2", "prompts_per_step=2",
                                     "train.micro_batch_size=4", "reference.micro_batch_size=4",
                                     "algo.transforms=[whiten_advantages]", "reward.pama.apply=scalar"))
    experience = batch(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.9], [0.8, 0.1]]))
    add_advantages(experience, ADVANTAGE_ESTIMATORS.get("group"), cfg.algo, 0.0,
                   REWARD_AGGREGATIONS.get("pama")(cfg.reward), transforms_by_stage(cfg.algo.transforms)["advantages"])
    valid = experience.advantages[experience.mask.bool()]
    assert (valid >= 0).all() and (valid > 0).any()


def test_dapo_filters_on_the_task_reward_and_its_fill_takes_no_part_in_the_loss():
    from rlhf.algorithms.reward_shaping import informative_groups
    from rlhf.groups import RewardResult

    # one group of two: equal task rewards, different overlong penalties: nothing to learn from the task
    result = RewardResult({"bleu": [0.5, 0.5]}, [0.5, 0.3], {"overlong": [0.0, -0.2]})
    assert result.task() == [0.5, 0.5]
    assert informative_groups(torch.tensor(result.task()), 2).tolist() == [False]
    assert informative_groups(torch.tensor(result.total), 2).tolist() == [True]  # what it tested before

    experience = batch(torch.rand(4, 1))
    trained = training_batch(experience, topped_up_rows=2)
    assert trained.mask.sum(-1).tolist() == [2.0, 3.0, 0.0, 0.0]  # a token-mean now divides by 5, not 11
    experience.truncated[0] = True
    mask_truncated = transforms_by_stage(["mask_truncated"])["training"]
    assert training_batch(experience, 0, mask_truncated).mask.sum(-1).tolist() == [0.0, 3.0, 3.0, 3.0]
    assert training_batch(experience, 0) is experience


def test_transforms_run_by_stage_in_the_configured_order():
    from rlhf.algorithms.reward_shaping import RunningMoments
    from rlhf.algorithms.transforms import TransformContext

    stages = transforms_by_stage(["mask_truncated", "whiten_advantages", "normalize_rewards"])
    assert [[fn.__name__ for fn in fns] for fns in stages.values()] == [
        ["normalize_rewards_step"], ["whiten_advantages"], ["mask_truncated"]]
    cfg = load_config(compose_config("output_dir=/tmp/x", "algo=ppo_max", "algo.reward_clip=0.5"))
    moments = RunningMoments()
    rewards = stages["rewards"][0](torch.tensor([0.0, 1.0, 2.0, 10.0]), TransformContext(cfg.algo, moments))
    assert moments.count == 4 and rewards.max().item() == 0.5  # normalised by the batch itself, then clipped


def test_the_kl_coefficient_reaches_the_estimator_as_given():
    # the KL controller's live value is an argument, not a rewritten config: two values, two advantages
    cfg = load_config(compose_config("output_dir=/tmp/x", "algo=rloo", "algo.group_size=2", "prompts_per_step=2",
                                     "train.micro_batch_size=4", "reference.micro_batch_size=4"))
    assert cfg.algo.kl.reward_beta == 0.05
    advantages = []
    for kl_coef in (0.0, 1.0):
        experience = batch(torch.tensor([[1.0], [1.0], [0.0], [0.0]]))
        experience.rollout_logp, experience.ref_logp = torch.zeros(4, 3), torch.full((4, 3), -0.5)
        add_advantages(experience, ADVANTAGE_ESTIMATORS.get("rloo"), cfg.algo, kl_coef,
                       REWARD_AGGREGATIONS.get("weighted_sum")(cfg.reward))
        advantages.append(experience.advantages[0, 0].item())
    # row 0 has 2 tokens of k1 = 0.5, row 1 three: with kl_coef 1 row 0 is 0.5 better than its group partner
    assert advantages == [0.0, 0.5]
