"""An agent that rewrites its history (env.agent): every segment of its episode trains, each as a sequence of its own,
with the episode's reward and advantage; group statistics are over episodes, not segments."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

from rlhf.agents.openai_agents import AgentEpisode, AgentRunner
from rlhf.algorithms import ADVANTAGE_ESTIMATORS
from rlhf.config import compose_config, load_config
from rlhf.data import PromptBatch
from rlhf.driver import add_advantages
from rlhf.engines.base import SamplingSettings
from rlhf.experience import Experience
from rlhf.rewards import REWARD_AGGREGATIONS
from rlhf.rollout.timing import NO_TIMER
from rlhf.training.critic import completion_values
from rlhf.training.logprobs import completion_logprobs, plain_completion_logprobs
from rlhf.training.segments import per_segment


def episode(first_prompt, turns, reward) -> AgentEpisode:
    """An episode built as the runner builds it: `turns` is a list of (new segment's prompt or None, env tokens,
    sampled tokens)."""
    e = AgentEpisode([], [], "", False)
    e.segments, e.prompt_ids, e.env_reward = 1, list(first_prompt), reward
    for opening, env, sampled in turns:
        if opening is not None:
            e.segment_start = len(e.completion_ids)
            e.segments += 1
            e.add(opening, None)
        e.add(env, None)
        e.add(sampled, [-0.5] * len(sampled))
    return e


def segment_tokens(experience: Experience, row: int, k: int):
    """A segment's tokens as its own sequence (the row's prompt opens segment 0) and its trained-token mask."""
    T = experience.completion_ids.shape[1]
    columns = (experience.segments[row] == k) & experience.attention_mask[row, -T:].bool()  # padding is no one's
    ids = experience.completion_ids[row][columns].tolist()
    mask = experience.mask[row][columns].tolist()
    if k == 0:
        prompt = experience.prompt_ids[row][experience.prompt_mask[row].bool()].tolist()
        ids, mask = prompt + ids, [0.0] * len(prompt) + mask
    return ids, mask


def test_the_group_advantage_is_per_episode_and_every_segment_carries_its_episodes():
    # a group of two episodes: the first rewrote its history once (two segments), reward 1; the second did not,
    # reward 0. Per episode: mean 0.5, advantages +-0.707 (GRPO) and +-1 (RLOO). Counted per segment the
    # first would weigh twice (mean 2/3).
    two = episode([1, 2, 3], [(None, [], [10, 11]), (None, [20], [12]), ([4, 5, 6], [], [13, 14])], 1.0)
    one = episode([1, 2, 3], [(None, [], [15, 16])], 0.0)
    assert two.segment_ids == [0, 0, 0, 0, 1, 1, 1, 1, 1] and two.context() == [4, 5, 6, 13, 14]
    experience = Experience.from_samples([[1, 2, 3]], [[two, one]], pad_id=0)
    assert experience.size == 2  # one row per episode
    assert segment_tokens(experience, 0, 0) == ([1, 2, 3, 10, 11, 20, 12], [0, 0, 0, 1, 1, 0, 1])
    assert segment_tokens(experience, 0, 1) == ([4, 5, 6, 13, 14], [0, 0, 0, 1, 1])
    assert experience.segments[1].tolist() == [0] * experience.completion_ids.shape[1]
    assert experience.context_mask[0].tolist() == [0, 0, 1, 0, 1, 1, 1, 0, 0]  # env tokens and the later prompt
    experience.rewards = torch.tensor([1.0, 0.0])
    experience.objective_rewards = experience.rewards[:, None]
    cfg = load_config(compose_config("output_dir=/tmp/unused", "algo.group_size=2", "prompts_per_step=1",
                                     "train.micro_batch_size=2", "reference.micro_batch_size=2"))
    aggregation = REWARD_AGGREGATIONS.get(cfg.reward.aggregation)(cfg.reward)
    for estimator, expected in (("group", 0.5 / 0.5 ** 0.5), ("rloo", 1.0)):
        add_advantages(experience, ADVANTAGE_ESTIMATORS.get(estimator), cfg.algo, 0.0, aggregation)
        trained = experience.mask.bool()
        assert torch.allclose(experience.advantages[0][trained[0]], torch.tensor(expected), atol=1e-3)
        assert torch.allclose(experience.advantages[1][trained[1]], torch.tensor(-expected), atol=1e-3)
        assert (experience.advantages[~trained] == 0).all()
    # DAPO's fill, the learners' splits and shares keep the segments with their rows
    assert torch.equal(experience.keeping(torch.tensor([True, False])).segments, experience.segments)
    assert torch.equal(torch.cat([p.segments for p in experience.split(1)]), experience.segments)


def alone(forward, ids: list[int], completion: int) -> torch.Tensor:
    """A sequence scored as a row of its own, its last `completion` positions."""
    row = torch.tensor([ids])
    return forward(row, torch.ones_like(row), completion)[0]


def test_each_segment_is_scored_as_a_sequence_of_its_own_by_the_policy_reference_and_critic(tiny_model):
    torch.manual_seed(0)
    first = episode([5, 6, 7, 8], [(None, [], [30, 31, 32]), (None, [40, 41], [33])], 1.0)
    second = episode([5, 6, 7, 8], [(None, [], [50]), ([9, 10, 11, 12, 13], [], [51, 52]),
                                    ([14, 15], [], [53, 54, 55])], 0.0)
    plain = episode([5, 6], [(None, [], [60, 61, 62, 63])], 0.5)
    experience = Experience.from_samples([[5, 6, 7, 8]], [[first, second, plain]], pad_id=0)
    T = experience.completion_ids.shape[1]
    policy = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    critic = AutoModelForTokenClassification.from_pretrained(tiny_model, num_labels=1).eval()
    logprobs = lambda ids, mask, t: completion_logprobs(policy, ids, mask, t)
    values = lambda ids, mask, t: completion_values(critic, ids, mask, t)
    with torch.no_grad():
        scored = {
            "packed": completion_logprobs(policy, experience.input_ids, experience.attention_mask, T, 1.0,
                                          experience.segments),
            "plain": per_segment(lambda i, m: plain_completion_logprobs(policy, i, m, T), experience.input_ids,
                                 experience.attention_mask, T, experience.segments),
            "critic": completion_values(critic, experience.input_ids, experience.attention_mask, T,
                                        experience.segments),
        }
        for row, e in enumerate([first, second, plain]):
            for k in range(max(e.segment_ids) + 1):
                ids, _ = segment_tokens(experience, row, k)
                columns = (experience.segments[row] == k) & experience.attention_mask[row, -T:].bool()
                n = int(columns.sum())
                for name, forward in (("packed", logprobs), ("plain", logprobs), ("critic", values)):
                    got = scored[name][row][columns]
                    assert torch.isfinite(got).all()
                    # a later segment's first token opens its sequence: nothing before it to score it by
                    expected = alone(forward, ids, n if k == 0 else n - 1)
                    assert torch.allclose(got[0 if k == 0 else 1:], expected, atol=1e-5), (name, row, k)


@pytest.mark.integration
def test_an_agent_that_rewrites_its_history_trains_both_segments_as_the_engine_sampled_them(engine, tiny_model):
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "env.agent=tests_agent_helpers:rewrites",
                                     "rollout.max_new_tokens=8", "env.max_episode_tokens=256",
                                     "data.max_prompt_tokens=900", "output_dir=/tmp/unused"))
    runner = AgentRunner(engine, cfg, AutoTokenizer.from_pretrained(tiny_model))
    calls = {}  # per session: (the tokens the engine continued, what it sampled, their logprobs), call by call
    respond = runner._respond

    def spy(session, pending, sample):
        calls.setdefault(session.index, []).append((pending.prompt_ids, sample.completion_ids, sample.logprobs))
        return respond(session, pending, sample)

    runner._respond = spy
    batch = PromptBatch([{"prompt": "Say a."}], [[0]], [""])
    try:
        [group] = runner.rollout(batch, 2, SamplingSettings(8, 1.0, 1.0, seed=3), None, NO_TIMER)
    finally:
        runner.close()
    experience = Experience.from_samples(batch.token_ids, [group], pad_id=0)
    assert experience.size == 2 and [e.segments for e in group] == [2, 2]
    policy = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    T = experience.completion_ids.shape[1]
    with torch.no_grad():
        learner = completion_logprobs(policy, experience.input_ids, experience.attention_mask, T, 1.0,
                                      experience.segments)
    for row, e in enumerate(group):
        assert e.env_reward == {"said": 0.5} and len(calls[row]) == 2  # the episode's reward, scored once
        for k, (context, sampled, engine_logprobs) in enumerate(calls[row]):
            ids, mask = segment_tokens(experience, row, k)
            # the segment is exactly what the engine continued and sampled; only the sampled tokens train
            assert ids == context + sampled and mask == [0.0] * len(context) + [1.0] * len(sampled)
            trained = (experience.segments[row] == k) & experience.mask[row].bool()
            assert experience.rollout_logp[row][trained].tolist() == pytest.approx(engine_logprobs, abs=1e-6)
            # the learner scores each segment on its own tokens: its logprobs are the engine's (fp32 HF engine)
            assert torch.allclose(learner[row][trained], torch.tensor(engine_logprobs), atol=1e-4)
