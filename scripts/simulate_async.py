"""Predict the samples/s of the rollout modes on a GPU cluster from per-token costs and a completion-length
distribution: a discrete-event simulation of the engines' continuous batching, the learner and the pushes.

    python scripts/simulate_async.py                          # the GPU preset: 7B-class model, long-tail lengths
    python scripts/simulate_async.py --preset cpu --bench outputs/bench_async/<time>.json   # against the CPU bench

Model. An engine's decode step takes `decode_s + decode_per_seq_s x running` seconds (memory-bound decoding: a
step costs about the same up to large batches) and advances every running sequence by one token; prefill and the
re-prefill of an interrupted request are not modelled. The learner takes `train_s_per_token x tokens / learners`
seconds per batch (forward and backward, the proximal logprobs included); a push costs `push_s` on every engine.
- sync: every device generates, then every device trains (colocated: engines + learners devices each way).
- sync-split and one_step_off: `engines` devices generate, `learners` devices train; one_step_off overlaps the
  next batch's generation with this one's training.
- async: the same split; groups admitted under the staleness bound ((W + max_staleness + 1) x prompts groups while
  the newest weights are W), each to the engine with the fewest sequences; the learner takes the finished groups due
  soonest as soon as `prompts` of them are there (waiting for a group that would pass the bound, as
  rlhf/rollout/staleness.py does); with partial rollouts a push pauses each engine `push_s`, without it an engine
  takes no new sequence until its running ones end, then loads.
"""

import argparse
import heapq
import json
import random
from dataclasses import dataclass

PRESETS = {
    # a 7B-class model in bf16 on H100/H200-class GPUs: a decode step of ~12 ms at batch 1, ~38 ms at 256;
    # training ~1.3e-4 s per token per GPU (6 x 7e9 FLOP per token at ~320 TFLOP/s, plus the logprob forwards);
    # weights pushed in ~2 s. Lengths: reasoning traces, lognormal with a median of ~1100 tokens, cut at 8192.
    "gpu": dict(decode_s=0.012, decode_per_seq_s=1e-4, train_s_per_token=1.3e-4, push_s=2.0, engines=4, learners=4,
                prompts=32, group=8, lengths="lognormal:7.0:0.9:8192"),
    # this project's 2-core machine, SmolLM2-135M in fp32 (scripts/bench_async.py's work, its measured costs): an
    # engine of one thread decodes at 0.05 + 0.006 x batch s per step; the learner trains 0.028 s per token on one
    # thread beside the engines (the overlapping modes; the synchronous layout's two-thread learner took 0.0144, its
    # push 0.76 s: --set train_s_per_token=0.0144 push_s=0.76 for its `sync-split` line). The model knows no cores.
    "cpu": dict(decode_s=0.05, decode_per_seq_s=0.006, train_s_per_token=0.028, push_s=0.16, engines=2, learners=1,
                prompts=4, group=4, lengths="lognormal:4.9:0.5:256"),
}


@dataclass
class Costs:
    decode_s: float
    decode_per_seq_s: float
    train_s_per_token: float
    push_s: float

    def step(self, running: int) -> float:
        return self.decode_s + self.decode_per_seq_s * running


def length_sampler(spec: str | list[int], seed: int):
    """`lognormal:mu:sigma:cap` or a list of measured lengths (drawn with replacement)."""
    rng = random.Random(seed)
    if isinstance(spec, list):
        return lambda: rng.choice(spec)
    _, mu, sigma, cap = spec.split(":")
    return lambda: max(1, min(int(cap), int(rng.lognormvariate(float(mu), float(sigma)))))


def generation_time(lengths: list[int], costs: Costs) -> float:
    """One engine decoding `lengths` together from the start: the batch shrinks as sequences end."""
    total, done, running = 0.0, 0, len(lengths)
    for length in sorted(lengths):
        total += (length - done) * costs.step(running)
        done, running = length, running - 1
    return total


def split_groups(groups: list[list[int]], engines: int) -> list[list[int]]:
    """Whole groups over the engines, round-robin."""
    shares = [[] for _ in range(engines)]
    for i, group in enumerate(groups):
        shares[i % engines] += group
    return shares


def simulate_batches(mode: str, draw, costs: Costs, engines: int, learners: int, prompts: int, group: int,
                     steps: int) -> list[float]:
    """Step times of sync (colocated: every device does both), sync-split and one_step_off."""
    batches = [[[draw() for _ in range(group)] for _ in range(prompts)] for _ in range(steps + 1)]
    devices = engines + learners if mode == "sync" else engines
    train_devices = engines + learners if mode == "sync" else learners
    gen = [max(generation_time(share, costs) for share in split_groups(b, devices)) for b in batches]
    train = [sum(map(sum, b)) * costs.train_s_per_token / train_devices for b in batches]
    if mode == "one_step_off":  # batch k + 1 generates while batch k trains
        return [max(gen[k + 1], train[k]) + costs.push_s for k in range(steps)]
    return [gen[k] + train[k] + costs.push_s for k in range(steps)]


def simulate_async(draw, costs: Costs, engines: int, learners: int, prompts: int, group: int, steps: int,
                   max_staleness: int, partial: bool) -> tuple[list[float], dict]:
    """Step times (between the learner's updates) of the async mode, and the engines' and learner's idle fractions."""
    running = [[] for _ in range(engines)]  # per engine: [tokens left, job] of each running sequence
    stepping = [None] * engines  # the sequences of the step in progress (those admitted during it join the next)
    free_at = [0.0] * engines  # an engine cannot step before (a push's pause)
    draining = [False] * engines  # without partial rollouts: loads once its running sequences end
    busy = [0.0] * engines
    jobs = {}  # number -> [admitted_at, sequences left, tokens]
    buffer, admitted, newest, updates = [], 0, 0, 0
    events = [(0.0, "admit", -1)]
    learner_free, learner_busy, update_times, now = 0.0, 0.0, [0.0], 0.0

    def admit(now):
        nonlocal admitted
        while admitted < (newest + max_staleness + 1) * prompts:
            ready = [i for i in range(engines) if not draining[i]]
            if not ready:
                return
            i = min(ready, key=lambda i: len(running[i]))
            lengths = [draw() for _ in range(group)]
            jobs[admitted] = [newest, group, sum(lengths)]
            running[i] += [[length, admitted] for length in lengths]
            admitted += 1
        for i in range(engines):
            if stepping[i] is None and running[i]:
                start_step(i, now)

    def start_step(i, now):
        stepping[i] = list(running[i])
        began = max(now, free_at[i])
        busy[i] += costs.step(len(stepping[i]))
        heapq.heappush(events, (began + costs.step(len(stepping[i])), "step", i))

    def try_train(now):
        nonlocal learner_free, learner_busy
        if learner_free > now or len(buffer) < prompts:
            return
        deadline = lambda n: jobs[n][0] + max_staleness  # noqa: E731
        buffer.sort(key=lambda n: (deadline(n), n))
        batch = buffer[:prompts]
        live = [n for n in jobs if jobs[n][1] >= 0]
        for due_by in sorted({deadline(n) for n in live}):
            due = sum(deadline(n) <= due_by for n in live)
            taken = sum(deadline(n) <= due_by for n in batch)
            if taken < prompts and due - taken > (due_by - updates) * prompts:
                return
        del buffer[:prompts]
        tokens = sum(jobs[n][2] for n in batch)
        for n in batch:
            jobs[n][1] = -1  # trained
        seconds = tokens * costs.train_s_per_token / learners
        learner_free, learner_busy = now + seconds, learner_busy + seconds
        heapq.heappush(events, (learner_free, "trained", -1))

    while len(update_times) <= steps:
        now, kind, i = heapq.heappop(events)
        if kind == "step":
            for sequence in stepping[i]:
                sequence[0] -= 1
            for _, number in (s for s in stepping[i] if s[0] <= 0):
                jobs[number][1] -= 1
                if jobs[number][1] == 0:
                    buffer.append(number)
            running[i], stepping[i] = [s for s in running[i] if s[0] > 0], None
            if draining[i] and not running[i]:
                draining[i], free_at[i] = False, now + costs.push_s
            if running[i]:
                start_step(i, now)
        elif kind == "trained":
            updates += 1
            update_times.append(now)
            newest = updates
            for e in range(engines):
                if partial or not running[e]:
                    free_at[e] = max(free_at[e], now) + costs.push_s
                else:
                    draining[e] = True
        admit(now)
        try_train(now)
    wall = update_times[-1]
    idle = {f"engine{i}_idle": 1 - busy[i] / wall for i in range(engines)} | {"learner_idle": max(0.0, 1 - learner_busy / wall)}
    return [b - a for a, b in zip(update_times, update_times[1:])], idle


def run_all(preset: dict, steps: int, seed: int, staleness=(1, 4)) -> dict:
    costs = Costs(preset["decode_s"], preset["decode_per_seq_s"], preset["train_s_per_token"], preset["push_s"])
    shape = dict(engines=preset["engines"], learners=preset["learners"], prompts=preset["prompts"],
                 group=preset["group"], steps=steps)
    results = {}
    for mode in ("sync", "sync-split", "one_step_off"):
        times = simulate_batches(mode, length_sampler(preset["lengths"], seed), costs, **shape)
        results[mode] = sum(times) / len(times)
    for eta in staleness:
        for partial in (True, False):
            times, _ = simulate_async(length_sampler(preset["lengths"], seed), costs, **shape, max_staleness=eta,
                                      partial=partial)
            results[f"async-{eta}-{'partial' if partial else 'whole'}"] = sum(times) / len(times)
    samples = preset["prompts"] * preset["group"]
    return {mode: {"seconds_per_step": s, "samples_per_second": samples / s} for mode, s in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="gpu")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a preset's value")
    parser.add_argument("--bench", help="a scripts/bench_async.py result: its measured s/step beside the prediction "
                                        "(its `sync` layout is this model's `sync-split`: one machine's engines, then "
                                        "its learner)")
    args = parser.parse_args()
    preset = dict(PRESETS[args.preset])
    for item in args.set:
        key, value = item.split("=", 1)
        preset[key] = value if key == "lengths" else type(preset[key])(float(value))
    results = run_all(preset, args.steps, args.seed)
    measured = {}
    if args.bench:
        measured = {r["layout"]: r["seconds_per_step"] for r in json.loads(open(args.bench).read())["results"]}
        measured["sync-split"] = measured.pop("sync", None)
    base = results["sync"]["samples_per_second"]
    print(f"preset {args.preset}: {json.dumps(preset)}")
    print(f"{'mode':>16} {'pred. s/step':>12} {'pred. samples/s':>15} {'x sync':>7}" + ("  measured s/step" if measured else ""))
    for mode, r in results.items():
        line = f"{mode:>16} {r['seconds_per_step']:>12.2f} {r['samples_per_second']:>15.2f} {r['samples_per_second'] / base:>7.2f}"
        if measured.get(mode) is not None:
            line += f"  {measured[mode]:>15.1f}"
        print(line)


if __name__ == "__main__":
    main()
