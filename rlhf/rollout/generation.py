"""Generation on the rollout engines, shared by every rollout source (single turns, episodes, agents' calls) and the
evaluator: prompts shared among the engines, asked again while an engine is in the middle of a weight update."""

import functools
import math
import time
from dataclasses import replace

import ray

from rlhf.engines.base import SamplingSettings
from rlhf.rollout.engine_state import WeightsUpdatingError


def generate(actors, prompts: list[list[int]], n: int, sampling: SamplingSettings, version: int | None = None):
    """Share the prompts among the rollout engines; results come back in prompt order. Prompt i keeps the
    seeds it would get from a single engine. `version`: the weights every engine must hold. An engine in the middle
    of a weight update (a GPU route's push from another thread) is asked again until the update is over."""
    engines = actors.rollouts
    chunk = math.ceil(len(prompts) / len(engines))
    calls = [functools.partial(engine.generate.remote, prompts[start : start + chunk], n,
                               sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + start * n),
                               version)
             for engine, start in zip(engines, range(0, len(prompts), chunk))]
    refs = [call() for call in calls]
    results = []
    for call, ref in zip(calls, refs):
        while True:
            try:
                results.append(ray.get(ref))
                break
            except WeightsUpdatingError:
                time.sleep(0.05)
                ref = call()
    return [group for part in results for group in part]
