"""GPU shares: checked before anything is reserved, and the layouts on a Ray instance with one declared GPU."""

import pytest

from actors.launch import engine_sleeps, role_demands
from actors.placement import PlacementError, RoleDemand, check_gpu_plan
from rlhf.config import compose_config, load_config


def single_gpu(*overrides):
    return load_config(compose_config("placement=single_gpu", "output_dir=/tmp/x", *overrides))


def test_every_role_of_single_gpu_asks_for_its_share():
    demands = role_demands(single_gpu("algo=ppo", "reward.models=[{label: rm, path: /abs/rm, weight: 1.0}]"), True)
    assert {role: d.num_gpus for role, d in demands.items()} == {
        "rollout": 0.3, "reward": 0.0, "reward_model": 0.1, "policy": 0.3, "reference": 0.2, "critic": 0.1}
    check_gpu_plan("colocated", demands, cluster_gpus=1)  # 1.0 in all: fits (no float drift over 1)


def test_shares_over_one_gpu_fail_naming_the_roles():
    demands = role_demands(single_gpu("rollout.num_gpus=0.6"), True)
    with pytest.raises(PlacementError, match=r"add up to 1.1 \(rollout 1 x 0.6, policy 1 x 0.3, reference 1 x 0.2\)"):
        check_gpu_plan("colocated", demands, cluster_gpus=1)


def test_a_cluster_without_enough_gpus_fails_at_once():
    demands = {"rollout": RoleDemand(2, 1, 1.0), "policy": RoleDemand(1, 1, 1.0)}
    with pytest.raises(PlacementError, match=r"ask for 3 GPUs \(rollout 2 x 1, policy 1 x 1\) but the cluster has 2"):
        check_gpu_plan("split", demands, cluster_gpus=2)
    check_gpu_plan("split", demands, cluster_gpus=3)
    check_gpu_plan("colocated", {"rollout": RoleDemand(1, 1)}, cluster_gpus=0)  # no GPU asked for


def test_the_engine_sleeps_only_beside_a_learner_on_its_gpu():
    assert engine_sleeps(single_gpu())
    assert not engine_sleeps(load_config(compose_config("output_dir=/tmp/x")))  # no GPU shares
    assert not engine_sleeps(single_gpu("rollout.async_one_step=true", "algo.tis_cap=2"))  # it must generate meanwhile
    assert not engine_sleeps(single_gpu("rollout.sleep_mode=false"))
