"""Where each role's actors go: Ray placement groups built from `conf/placement/`.

- colocated: one placement group, one bundle holding every role's CPUs (the debug and single-machine
  layout: all roles share the node and take turns on the cores).
- split: a placement group per role, one bundle per actor (engine or rank), spread over the nodes, so roles
  sit on resources of their own.
Bundles need some resource, so a role that reserves 0 CPUs still gets a token 0.01 CPU bundle.
"""

from dataclasses import dataclass

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

TOKEN_CPU = 0.01


@dataclass
class RoleDemand:
    count: int  # actors of the role (engines, ranks)
    num_cpus: float  # CPUs each reserves


class Placement:
    def __init__(self, layout: str, demands: dict[str, RoleDemand], timeout_s: float):
        self.layout, self.demands, self.groups = layout, demands, {}
        if layout == "colocated":
            total = sum(d.count * d.num_cpus for d in demands.values())
            self.groups["all"] = placement_group([{"CPU": max(total, TOKEN_CPU)}], strategy="STRICT_PACK")
        elif layout == "split":
            for role, d in demands.items():
                bundles = [{"CPU": max(d.num_cpus, TOKEN_CPU)} for _ in range(d.count)]
                self.groups[role] = placement_group(bundles, strategy="SPREAD")
        else:
            raise ValueError(f"unknown placement layout {layout!r}; choose colocated or split")
        ready = [g.ready() for g in self.groups.values()]
        done, _ = ray.wait(ready, num_returns=len(ready), timeout=timeout_s)
        if len(done) < len(ready):
            self.remove()
            wanted = {role: f"{d.count} x {d.num_cpus} CPU" for role, d in demands.items()}
            raise RuntimeError(f"placement '{layout}' could not be scheduled within {timeout_s} s: it needs {wanted} "
                               f"(total {sum(d.count * d.num_cpus for d in demands.values()):g} CPUs); the cluster "
                               f"has {ray.cluster_resources().get('CPU', 0):g}. Lower *.num_cpus or the engine/rank "
                               "counts, or add nodes")

    def strategy(self, role: str, index: int) -> PlacementGroupSchedulingStrategy:
        if self.layout == "colocated":
            return PlacementGroupSchedulingStrategy(self.groups["all"], placement_group_bundle_index=0)
        return PlacementGroupSchedulingStrategy(self.groups[role], placement_group_bundle_index=index)

    def remove(self) -> None:
        for group in self.groups.values():
            remove_placement_group(group)
        self.groups = {}
