"""Where each role's actors go: Ray placement groups built from `conf/placement/`.

- colocated: one placement group, one bundle holding every role's CPUs and GPU shares on one node (the debug and
  single-machine layout: all roles share the node, and with GPU shares one GPU, taking turns on them).
  `placement=single_gpu` is this layout with every role given a share of the one GPU.
- split: a placement group per role, one bundle per actor (engine or rank), spread over the nodes, so roles
  sit on resources of their own.
Bundles need some resource, so a role that reserves 0 CPUs still gets a token 0.01 CPU bundle.
"""

import math
from dataclasses import dataclass

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

TOKEN_CPU = 0.01


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


def _total(demands: dict[str, RoleDemand], resource: str) -> float:
    return round(sum(d.count * getattr(d, f"num_{resource}") for d in demands.values()), 4)  # Ray's granularity


def check_gpu_plan(layout: str, demands: dict[str, RoleDemand], cluster_gpus: float) -> None:
    """Fail before anything is reserved when the GPU shares cannot be placed: colocated puts every share on one GPU."""
    wanted = {role: d for role, d in demands.items() if d.num_gpus}
    if not wanted:
        return
    shares = ", ".join(f"{role} {d.count} x {d.num_gpus:g}" for role, d in wanted.items())
    total = _total(wanted, "gpus")
    if layout == "colocated" and total > 1:
        raise PlacementError(f"placement 'colocated' puts every role on one GPU, but the roles' GPU shares add up to "
                             f"{total:g} ({shares}); lower *.num_gpus so they sum to at most 1, or use placement=split")
    if math.ceil(total) > cluster_gpus:
        raise PlacementError(f"the roles ask for {total:g} GPUs ({shares}) but the cluster has {cluster_gpus:g}; start "
                             "Ray with GPUs (ray.num_gpus=N declares them for a local instance) or set the roles' "
                             "num_gpus to 0")


class Placement:
    def __init__(self, layout: str, demands: dict[str, RoleDemand], timeout_s: float):
        self.layout, self.demands, self.groups = layout, demands, {}
        if layout not in ("colocated", "split"):
            raise ValueError(f"unknown placement layout {layout!r}; choose colocated or split")
        check_gpu_plan(layout, demands, ray.cluster_resources().get("GPU", 0))
        if layout == "colocated":
            bundle = {"CPU": max(_total(demands, "cpus"), TOKEN_CPU)}
            if _total(demands, "gpus"):
                bundle["GPU"] = _total(demands, "gpus")  # at most 1 (checked): every share on the same GPU
            self.groups["all"] = placement_group([bundle], strategy="STRICT_PACK")
        else:
            for role, d in demands.items():
                bundle = {"CPU": max(d.num_cpus, TOKEN_CPU), **({"GPU": d.num_gpus} if d.num_gpus else {})}
                self.groups[role] = placement_group([dict(bundle) for _ in range(d.count)], strategy="SPREAD")
        ready = [g.ready() for g in self.groups.values()]
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=timeout_s)
        if len(done) < len(ready):
            self.remove()
            wanted = {role: d.describe() for role, d in demands.items()}
            resources = ray.cluster_resources()
            raise PlacementError(
                f"placement '{layout}' could not be scheduled within {timeout_s} s: it needs {wanted} (total "
                f"{_total(demands, 'cpus'):g} CPUs, {_total(demands, 'gpus'):g} GPUs); the cluster has "
                f"{resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs. Lower *.num_cpus / *.num_gpus "
                "or the engine/rank counts, or add nodes")

    def strategy(self, role: str, index: int) -> PlacementGroupSchedulingStrategy:
        if self.layout == "colocated":
            return PlacementGroupSchedulingStrategy(self.groups["all"], placement_group_bundle_index=0)
        return PlacementGroupSchedulingStrategy(self.groups[role], placement_group_bundle_index=index)

    def remove(self) -> None:
        for group in self.groups.values():
            remove_placement_group(group)
        self.groups = {}
