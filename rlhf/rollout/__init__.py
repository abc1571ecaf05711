"""The rollout side: how a step's groups are generated, scored and handed to the learner (docs/architecture.md).

- sources: `RolloutSource` (single turns here; episodes and agents' episodes in rlhf/agents), `rollout_source`
- generation: the engines' `generate`, shared by every source and the evaluator
- scoring, sampler: a batch's rewards and DAPO's shaping and filter (`Sampler`), the sampling seeds
- schedules: `Schedule` (sync, one-step-off, async: `make_schedule`); asynchronous, jobs: the async schedule;
  staleness: its pure admission and pick rules; stream: requests streamed through an engine (on the rollout actor)
- recovery, batches, timing: dead actors and restarts, a batch's experience, phase timers

Nothing is imported here: a module of the package imports only what it uses, so no import circle forms with
rlhf/agents (tests/rlhf/rollout/test_no_import_cycle.py).
"""
