"""GPU shares: checked before anything is reserved, and the layouts on a Ray instance with 8 declared GPUs."""

import pytest
import ray

from actors.launch import engine_sleeps, role_demands
from actors.placement import Placement, PlacementError, RoleDemand, check_gpu_plan, plan_groups
from rlhf.config import compose_config, load_config


def layout(name, *overrides):
    return load_config(compose_config(f"placement={name}", "output_dir=/tmp/x", *overrides))


def check(cfg, cluster_gpus):
    demands = role_demands(cfg, True)
    p = cfg.placement
    check_gpu_plan(plan_groups(p.layout, demands, p.bundles, dict(p.beside)), demands, cluster_gpus,
                   cfg.rollout.weight_sync)


def test_every_role_of_single_gpu_asks_for_its_share():
    cfg = layout("single_gpu", "algo=ppo", "reward.models=[{label: rm, path: /abs/rm, weight: 1.0}]")
    assert {role: d.num_gpus for role, d in role_demands(cfg, True).items()} == {
        "rollout": 0.3, "reward": 0.0, "reward_model": 0.1, "policy": 0.3, "reference": 0.2, "critic": 0.1}
    check(cfg, cluster_gpus=1)  # 1.0 in all: fits (no float drift over 1)


def test_shares_over_one_gpu_fail_naming_the_roles():
    with pytest.raises(PlacementError, match=r"rollout 0, policy 0, reference 0 share one GPU, but their GPU shares "
                                             r"add up to 1.1 \(rollout 0.6, policy 0.3, reference 0.2\)"):
        check(layout("single_gpu", "rollout.num_gpus=0.6"), cluster_gpus=1)
    with pytest.raises(PlacementError, match=r"group 'policy': policy 0, reference 0 share one GPU, but their GPU shares add up to 1.2"):
        check(layout("split_8gpu", "reference.num_gpus=0.6"), cluster_gpus=8)


def test_a_cluster_without_enough_gpus_fails_at_once():
    demands = {"rollout": RoleDemand(2, 1, 1.0), "policy": RoleDemand(1, 1, 1.0)}
    with pytest.raises(PlacementError, match=r"ask for 3 GPUs \(rollout 2 x 1, policy 1 x 1\) but the cluster has 2"):
        check_gpu_plan(plan_groups("split", demands), demands, cluster_gpus=2)
    check_gpu_plan(plan_groups("split", demands), demands, cluster_gpus=3)
    with pytest.raises(PlacementError, match=r"ask for 8 GPUs .* but the cluster has 4"):
        check(layout("colocated_8gpu"), cluster_gpus=4)


def test_beside_must_name_running_roles():
    with pytest.raises(PlacementError, match=r"placement.beside=\{'critc': 'policy'\}"):
        plan_groups("split", {"policy": RoleDemand(1, 1)}, beside={"critc": "policy"})  # a misspelt role
    with pytest.raises(PlacementError, match=r"placement.beside=\{'reference': 'critic'\}"):
        plan_groups("split", {"policy": RoleDemand(1, 1), "reference": RoleDemand(1, 1)}, beside={"reference": "critic"})
    # a role this run does not start (split_8gpu's critic without PPO) beside another: moot, not an error
    assert list(plan_groups("split", {"policy": RoleDemand(1, 1)}, beside={"critic": "policy"})) == ["policy"]


def test_nccl_refuses_two_ranks_of_a_group_on_one_gpu_before_anything_starts():
    with pytest.raises(PlacementError, match=r"policy ranks \[0, 1\] would share one GPU"):
        check(layout("single_gpu", "train.ranks=2", "train.micro_batch_size=4"), cluster_gpus=1)
    with pytest.raises(PlacementError, match=r"reference ranks \[0, 2\] would share one GPU"):
        check(layout("colocated_8gpu", "placement.bundles=2", "rollout.engines=2", "train.ranks=2",
                     "train.micro_batch_size=4", "reference.ranks=4"), cluster_gpus=8)
    with pytest.raises(PlacementError, match=r"rollout.weight_sync=nccl: policy rank 0 and rollout engine 0 would share"):
        check(layout("single_gpu", "rollout.weight_sync=nccl"), cluster_gpus=1)
    check(layout("split_8gpu", "rollout.weight_sync=nccl"), cluster_gpus=8)  # engines on GPUs of their own
    check(layout("colocated_8gpu", "algo=ppo"), cluster_gpus=8)  # one rank of each role per GPU


def test_the_engine_sleeps_only_beside_a_learner_on_its_gpu():
    assert engine_sleeps(layout("single_gpu")) and engine_sleeps(layout("colocated_8gpu"))
    assert not engine_sleeps(load_config(compose_config("output_dir=/tmp/x")))  # no GPU shares
    assert not engine_sleeps(layout("split_8gpu"))  # engines on GPUs of their own
    assert not engine_sleeps(layout("single_gpu", "rollout.mode=one_step_off", "algo/correction=tis"))  # generates meanwhile
    assert not engine_sleeps(layout("single_gpu", "rollout.sleep_mode=false"))


@ray.remote(num_cpus=0)
class Probe:
    def gpu_ids(self) -> list[str]:
        return [str(i) for i in ray.get_gpu_ids()]


def placed_gpu_ids(cfg) -> dict[tuple[str, int], list[str]]:
    """Every actor of the layout as a probe actor, placed exactly as launch_actors places the roles."""
    demands = role_demands(cfg, True)
    placement = Placement(cfg.placement.layout, demands, 30, cfg.placement.bundles, dict(cfg.placement.beside),
                          cfg.placement.role_strategy)
    try:
        probes = {(role, i): Probe.options(num_gpus=d.num_gpus, scheduling_strategy=placement.strategy(role, i)).remote()
                  for role, d in demands.items() for i in range(d.count)}
        return {key: ray.get(probe.gpu_ids.remote()) for key, probe in probes.items()}
    finally:
        placement.remove()


FREE_CPUS = [f"{role}.num_cpus=0" for role in ("rollout", "train", "reference")]  # the test cluster has 2 CPUs


def test_eight_gpus_colocated_put_an_engine_a_rank_and_a_reference_rank_on_every_gpu(ray_cluster):
    ids = placed_gpu_ids(layout("colocated_8gpu", *FREE_CPUS))
    for i in range(8):
        assert len(ids[("rollout", i)]) == 1 and ids[("rollout", i)] == ids[("policy", i)] == ids[("reference", i)]
    assert sorted(ids[("rollout", i)][0] for i in range(8)) == [str(g) for g in range(8)]  # one GPU each


def test_eight_gpus_split_give_engines_gpus_of_their_own_and_the_reference_its_rank_s(ray_cluster):
    ids = placed_gpu_ids(layout("split_8gpu", *FREE_CPUS))
    engines = {ids[("rollout", i)][0] for i in range(4)}
    learners = {ids[("policy", i)][0] for i in range(4)}
    assert len(engines) == 4 and len(learners) == 4 and not engines & learners
    assert all(ids[("reference", i)] == ids[("policy", i)] for i in range(4))
    assert ids[("reward", 0)] == []


def test_engines_that_share_a_gpu_start_in_waves(ray_cluster):
    def waves(cfg):
        placement = Placement(cfg.placement.layout, role_demands(cfg, True), 30, cfg.placement.bundles,
                              dict(cfg.placement.beside), cfg.placement.role_strategy)
        try:
            return placement.start_waves("rollout")
        finally:
            placement.remove()

    # one GPU for two engines and the learner: one engine at a time, then the rest
    assert waves(layout("single_gpu", "rollout.engines=2", "rollout.num_gpus=0.15", *FREE_CPUS)) == [[0], [1]]
    # an engine beside a learner rank on each of 8 GPUs: all engines at once, then the rest
    assert waves(layout("colocated_8gpu", *FREE_CPUS)) == [list(range(8))]
    assert waves(layout("split_8gpu", *FREE_CPUS)) is None  # GPUs of their own: everything at once
    assert waves(layout("colocated")) is None  # no GPU shares
