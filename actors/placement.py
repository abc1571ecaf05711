"""Where each role's actors go: Ray placement groups built from `conf/placement/`.

- colocated: one placement group of `placement.bundles` bundles on as few nodes as possible; actor i of every role
  goes to bundle i % bundles. With one bundle (the default, and `placement=single_gpu`) every role shares one node
  and, with GPU shares, one GPU, taking turns; with one bundle per GPU (`placement=colocated_8gpu`) every GPU holds
  an engine, a learner rank and a reference rank, the engine asleep while the learner trains.
- split: a placement group per role, one bundle per actor (engine or rank), spread over the nodes
  (`placement.role_strategy=SPREAD`) or packed onto as few as possible (PACK), so roles sit on
  resources of their own; `placement.beside` puts a role into another's bundles (`{reference: policy}`: reference
  rank i on learner rank i's GPU).
Several actors in one bundle that take GPU shares share its one GPU, so their shares may add up to at most 1.
Bundles need some resource, so a bundle of 0-CPU actors still gets a token 0.01 CPU.
"""

import math
from dataclasses import dataclass

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

TOKEN_CPU = 0.01
ROLES = ("rollout", "reward", "reward_model", "eval_reward", "policy", "reference", "critic")  # as launch.role_demands names them
LEARNER_ROLES = ("policy", "reference", "critic")  # roles whose ranks form a DeepSpeed group (NCCL on GPUs)


@dataclass
class RoleDemand:
    count: int  # actors of the role (engines, ranks)
    num_cpus: float  # CPUs each reserves
    num_gpus: float = 0.0  # GPUs each reserves (a fraction shares one GPU)

    def describe(self) -> str:
        gpus = f" + {self.num_gpus:g} GPU" if self.num_gpus else ""
        return f"{self.count} x {self.num_cpus:g} CPU{gpus}"


class PlacementError(RuntimeError):
    """The layout cannot be placed on this cluster (or on any): names every role's demand."""


def _round(x: float) -> float:
    return round(x, 4)  # Ray's resource granularity: 0.3 + 0.3 + 0.2 + 0.1 + 0.1 is 1, not 1.0000000000000002


def plan_groups(layout: str, demands: dict[str, RoleDemand], bundles: int = 1,
                beside: dict[str, str] | None = None) -> dict[str, dict]:
    """Placement groups as `{name: {"roles": [...], "bundles": [{resource: amount}], "members": [[(role, i)]]}}`:
    which actors each bundle holds and what it reserves for them. Pure: no Ray."""
    # an entry for a role this run does not start (a critic beside the policy without PPO) is moot
    beside = {role: host for role, host in (beside or {}).items() if role in demands or role not in ROLES}
    if layout == "colocated":
        layout_groups = {"all": (list(demands), bundles)}
    elif layout == "split":
        unknown = {r: h for r, h in beside.items() if r not in demands or h not in demands or h in beside}
        if unknown:
            raise PlacementError(f"placement.beside={beside}: {unknown} does not name two running roles (the host "
                                 f"may not be beside another); running roles: {sorted(demands)}")
        layout_groups = {role: ([role] + [r for r, host in beside.items() if host == role], d.count)
                         for role, d in demands.items() if role not in beside}
    else:
        raise ValueError(f"unknown placement layout {layout!r}; choose colocated or split")
    groups = {}
    for name, (roles, count) in layout_groups.items():
        members = [[] for _ in range(count)]
        for role in roles:
            for index in range(demands[role].count):
                members[index % count].append((role, index))
        reserved = []
        for held in members:
            bundle = {"CPU": max(_round(sum(demands[r].num_cpus for r, _ in held)), TOKEN_CPU)}
            gpus = _round(sum(demands[r].num_gpus for r, _ in held))
            if gpus:
                bundle["GPU"] = gpus
            reserved.append(bundle)
        groups[name] = {"roles": roles, "bundles": reserved, "members": members}
    return groups


def check_gpu_plan(groups: dict[str, dict], demands: dict[str, RoleDemand], cluster_gpus: float,
                   weight_sync: str = "auto") -> None:
    """Fail before anything is reserved when the GPU shares cannot be placed: actors sharing a bundle share its one
    GPU, and the cluster must have the GPUs the bundles add up to. NCCL refuses two ranks of one group on one GPU:
    two ranks of a learner role in one bundle, and with `weight_sync=nccl` learner rank 0 beside an engine."""
    for name, group in groups.items():
        for held, bundle in zip(group["members"], group["bundles"]):
            sharing = [(r, i) for r, i in held if demands[r].num_gpus]
            for role in LEARNER_ROLES:
                ranks = [i for r, i in sharing if r == role]
                if len(ranks) > 1:
                    raise PlacementError(f"placement group {name!r}: {role} ranks {ranks} would share one GPU, and "
                                         "NCCL refuses two ranks of one group on one GPU; give the ranks bundles of "
                                         "their own (more placement.bundles, or placement=split) or fewer ranks")
            engines = [i for r, i in sharing if r == "rollout"]
            if weight_sync == "nccl" and ("policy", 0) in sharing and engines:
                raise PlacementError(f"rollout.weight_sync=nccl: policy rank 0 and rollout engine {engines[0]} would "
                                     f"share one GPU (placement group {name!r}), and NCCL refuses two ranks of its "
                                     "group on one GPU; on a shared GPU use rollout.weight_sync=cuda_ipc (or auto), "
                                     "or give the engines GPUs of their own (placement=split)")
            if len(sharing) > 1 and bundle.get("GPU", 0) > 1:
                shares = ", ".join(f"{r} {demands[r].num_gpus:g}" for r, _ in sharing)
                raise PlacementError(f"placement group {name!r}: {', '.join(f'{r} {i}' for r, i in sharing)} share one "
                                     f"GPU, but their GPU shares add up to {bundle['GPU']:g} ({shares}); lower "
                                     "*.num_gpus so they sum to at most 1, or give the roles bundles of their own "
                                     "(placement=split, more placement.bundles)")
    wanted = {role: d for role, d in demands.items() if d.num_gpus}
    total = sum(math.ceil(b.get("GPU", 0) - 1e-9) for g in groups.values() for b in g["bundles"])
    if wanted and total > cluster_gpus:
        shares = ", ".join(f"{role} {d.count} x {d.num_gpus:g}" for role, d in wanted.items())
        raise PlacementError(f"the roles ask for {total:g} GPUs ({shares}) but the cluster has {cluster_gpus:g}; start "
                             "Ray with GPUs (ray.num_gpus=N declares them for a local instance) or set the roles' "
                             "num_gpus to 0")


class Placement:
    def __init__(self, layout: str, demands: dict[str, RoleDemand], timeout_s: float, bundles: int = 1,
                 beside: dict[str, str] | None = None, role_strategy: str = "SPREAD", weight_sync: str = "auto"):
        """`role_strategy` (split): how each role's bundles go over the nodes, SPREAD (over as many as possible) or
        PACK (onto as few: `split_8gpu` on two nodes of 4 GPUs puts the engines on one, the learners on the other)."""
        self.layout, self.demands, self.groups = layout, demands, {}
        plan = plan_groups(layout, demands, bundles, beside)
        check_gpu_plan(plan, demands, ray.cluster_resources().get("GPU", 0), weight_sync)
        self.where = {member: (name, k) for name, group in plan.items()
                      for k, held in enumerate(group["members"]) for member in held}
        strategy = {"colocated": "STRICT_PACK" if bundles == 1 else "PACK", "split": role_strategy}[layout]
        self.groups = {name: placement_group(group["bundles"], strategy=strategy) for name, group in plan.items()}
        ready = [g.ready() for g in self.groups.values()]
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=timeout_s)
        if len(done) < len(ready):
            self.remove()
            wanted = {role: d.describe() for role, d in demands.items()}
            resources = ray.cluster_resources()
            cpus = sum(b["CPU"] for g in plan.values() for b in g["bundles"])
            gpus = sum(b.get("GPU", 0) for g in plan.values() for b in g["bundles"])
            raise PlacementError(
                f"placement '{layout}' could not be scheduled within {timeout_s} s: it needs {wanted} (total "
                f"{cpus:g} CPUs, {gpus:g} GPUs); the cluster has {resources.get('CPU', 0):g} CPUs and "
                f"{resources.get('GPU', 0):g} GPUs. Lower *.num_cpus / *.num_gpus or the engine/rank counts, or add nodes")

    def start_waves(self, role: str) -> list[list[int]] | None:
        """`role`'s actors in start-up waves, when any of them shares its GPU with another actor (None otherwise):
        wave k holds the k-th of them in every bundle, and wave 0 also those with a GPU to themselves."""
        holding = {}  # bundle -> its actors with a GPU share
        for member, bundle in self.where.items():
            if self.demands[member[0]].num_gpus:
                holding.setdefault(bundle, []).append(member)
        shared = [[i for r, i in held if r == role] for held in holding.values() if len(held) > 1]
        if not any(shared):
            return None
        waves = [[] for _ in range(max(map(len, shared)))]
        for actors in shared:
            for k, index in enumerate(actors):
                waves[k].append(index)
        waves[0] += [i for i in range(self.demands[role].count) if not any(i in actors for actors in shared)]
        return [sorted(wave) for wave in waves]

    def strategy(self, role: str, index: int) -> PlacementGroupSchedulingStrategy:
        name, bundle = self.where[(role, index)]
        return PlacementGroupSchedulingStrategy(self.groups[name], placement_group_bundle_index=bundle)

    def remove(self) -> None:
        for group in self.groups.values():
            remove_placement_group(group)
        self.groups = {}
