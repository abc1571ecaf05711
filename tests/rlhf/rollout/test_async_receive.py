"""The async producer's `_receive`: a group goes to be scored once, however many of its answers come back after its
last sample (an agent's group: each episode's last answer returns once the agent has finished, possibly after the
others). A second scoring put the group in the buffer twice and failed the learner's pick (KeyError)."""

import threading
from types import SimpleNamespace

from rlhf.rollout.asynchronous import Asynchronous
from rlhf.rollout.jobs import Job


class FinishedGroup:
    """A source group whose every episode has ended: each answer asks for nothing more, the result is ready."""

    def receive(self, key, sample):
        return []

    def result(self):
        return ["episode"] * 4


def test_answers_after_a_group_is_complete_score_it_once():
    scored = []
    producer = SimpleNamespace(pushes={0: 0}, cond=threading.Condition(), live={}, engines=[],
                               scorers=SimpleNamespace(submit=lambda guard, work, job, samples: scored.append(job.number)),
                               _score=None, _guarded=None)
    job = Job(number=7, row=0, work=FinishedGroup(), batch=None, engine=0, admitted_at=0)
    for _ in range(4):  # four episodes' last answers, each after the group was complete
        Asynchronous._receive(producer, job, 0, SimpleNamespace(versions=[0]))
    assert scored == [7] and job.complete
