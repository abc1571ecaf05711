"""The NCCL route's side of the contract, NCCL itself replaced by recorders (it cannot run on CPU): the group is
formed once, a restarted engine (a new process, outside the group) makes every member leave and the group form again
at a fresh rendezvous before the next broadcast."""

import ray

from actors.weight_sync import NcclBroadcastRoute
from tests_ray_helpers import back_after_restart, wait_until


@ray.remote(num_cpus=0, max_restarts=1)
class EngineRecorder:
    """A rollout actor's NCCL calls; after a restart (a new process) it has no engine until started, and no group."""

    def __init__(self):
        self.engine = not ray.get_runtime_context().was_current_actor_reconstructed
        self.group, self.log = None, []

    def start(self):
        self.engine = True

    def started(self) -> bool:
        return self.engine

    def in_weight_group(self) -> bool:
        return self.group is not None

    def join_weight_group(self, host, port, rank, world, bucket_bytes):
        self.group = port
        self.log.append(("join", port, rank, world))

    def leave_weight_group(self):
        self.log.append(("leave", self.group))
        self.group = None

    def pause(self):
        self.log.append(("pause",))

    def begin_weight_update(self):
        self.log.append(("begin", self.group))

    def abandon_weight_update(self):
        self.log.append(("abandon",))

    def receive_bucket(self, bucket):
        self.log.append(("receive", bucket["names"], self.group))

    def finish_weight_update(self, version):
        self.log.append(("finish", version))

    def calls(self) -> list:
        return self.log


@ray.remote(num_cpus=0)
class LearnerRecorder:
    def __init__(self):
        self.port, self.group, self.log = 40000, None, []

    def master_address(self):
        self.port += 1  # a fresh rendezvous each time
        return "127.0.0.1", self.port

    def join_weight_group(self, host, port, rank, world):
        self.group = port
        self.log.append(("join", port, rank, world))

    def leave_weight_group(self):
        self.log.append(("leave", self.group))
        self.group = None

    def prepare_nccl_push(self, bucket_bytes):
        return [{"names": ["embed"]}, {"names": ["head"]}]

    def broadcast_bucket(self, index):
        self.log.append(("broadcast", index, self.group))

    def finish_nccl_push(self):
        pass

    def calls(self) -> list:
        return self.log


class Ranks:
    """The policy's LearnerGroup as the route uses it: one rank."""

    def __init__(self, rank):
        self.ranks = [rank]

    def call(self, method, *args):
        return [getattr(rank, method).remote(*args) for rank in self.ranks]


def test_a_restarted_engine_makes_the_group_form_again_before_the_next_push(ray_cluster):
    learner, engines = LearnerRecorder.remote(), [EngineRecorder.remote(), EngineRecorder.remote()]
    route = NcclBroadcastRoute(Ranks(learner), engines, timeout_s=30, drain_timeout_s=30, bucket_mb=1)
    route.push()
    first = ("join", 40001)
    assert ray.get(learner.calls.remote())[0] == (*first, 0, 3)
    assert ray.get(engines[1].calls.remote()) == [(*first, 2, 3), ("pause",), ("begin", 40001),
                                                  ("receive", ["embed"], 40001), ("receive", ["head"], 40001),
                                                  ("finish", 1)]

    ray.kill(engines[1], no_restart=False)  # a crash: Ray brings it back as a new process
    wait_until(lambda: back_after_restart(engines[1], 1), "the engine recorder back after its kill")
    # its engine is not started yet: this push reaches no engine (it says so), and is still counted
    assert route.push() == [] and route.version == 2 and ray.get(engines[1].calls.remote()) == []
    assert ray.get(engines[0].calls.remote())[-1] == ("finish", 1)

    ray.get(engines[1].start.remote())  # what the driver's wait_for_restarts does
    route.push()
    second = ("join", 40002)
    assert ray.get(learner.calls.remote())[-4:] == [("leave", 40001), (*second, 0, 3), ("broadcast", 0, 40002),
                                                    ("broadcast", 1, 40002)]
    assert ray.get(engines[0].calls.remote())[-7:] == [("leave", 40001), (*second, 1, 3), ("pause",),
                                                       ("begin", 40002), ("receive", ["embed"], 40002),
                                                       ("receive", ["head"], 40002), ("finish", 3)]
    assert ray.get(engines[1].calls.remote()) == [(*second, 2, 3), ("pause",), ("begin", 40002),
                                                  ("receive", ["embed"], 40002), ("receive", ["head"], 40002),
                                                  ("finish", 3)]
    for actor in (learner, *engines):
        ray.kill(actor, no_restart=True)
