"""The driver's advantage step (`add_advantages`) with settings that interact: pure tensors, no actors."""

import torch

from rlhf.algorithms import ADVANTAGE_ESTIMATORS
from rlhf.config import compose_config, load_config
from rlhf.driver import add_advantages
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
                                     "algo.whiten_advantages=true", "reward.pama.apply=scalar"))
    experience = batch(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.2, 0.9], [0.8, 0.1]]))
    add_advantages(experience, ADVANTAGE_ESTIMATORS.get("group"), cfg.algo,
                   REWARD_AGGREGATIONS.get("pama")(cfg.reward))
    valid = experience.advantages[experience.mask.bool()]
    assert (valid >= 0).all() and (valid > 0).any()


def test_dapo_filters_on_the_task_reward_and_its_fill_takes_no_part_in_the_loss():
    from rlhf.algorithms.reward_shaping import informative_groups
    from rlhf.driver import training_batch
    from rlhf.groups import RewardResult

    # one group of two: equal task rewards, different overlong penalties: nothing to learn from the task
    result = RewardResult({"bleu": [0.5, 0.5]}, [0.5, 0.3], {"overlong": [0.0, -0.2]})
    assert result.task() == [0.5, 0.5]
    assert informative_groups(torch.tensor(result.task()), 2).tolist() == [False]
    assert informative_groups(torch.tensor(result.total), 2).tolist() == [True]  # what it tested before

    experience = batch(torch.rand(4, 1))
    trained = training_batch(experience, topped_up_rows=2, mask_truncated=False)
    assert trained.mask.sum(-1).tolist() == [2.0, 3.0, 0.0, 0.0]  # a token-mean now divides by 5, not 11
    experience.truncated[0] = True
    assert training_batch(experience, 0, mask_truncated=True).mask.sum(-1).tolist() == [0.0, 3.0, 3.0, 3.0]
    assert training_batch(experience, 0, mask_truncated=False) is experience
