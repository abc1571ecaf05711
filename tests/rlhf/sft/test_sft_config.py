"""SFT settings refused with the reason, and the demonstrations experiment=calculator and experiment=guess_number
write for their warm starts."""

import json

import pytest
from transformers import AutoTokenizer

from rlhf.config import compose_config, load_config
from rlhf.rewards.functions import numeric_match


def load(*overrides):
    return load_config(compose_config("output_dir=/tmp/unused", *overrides))


@pytest.mark.parametrize("overrides, message", [
    (["sft.packing=true"], "only flash-attention reads them as separate sequences"),
    (["sft.packing=true", "train.attn_implementation=flash_attention_2"], "on a GPU"),
    (["algo=sft", "sft.steps=3"], "algo=sft is a supervised run of its own"),
    (["sft.steps=3", "train.lora.rank=8"], "set sft.reference=base"),
    (["sft.reference=frozen"], "sft.reference='frozen' is not valid"),
    (["train.max_tokens_per_micro_batch=0"], "must be > 0"),
    (["+sft.data.pth=/x"], "are not data settings"),
])
def test_sft_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        load(*overrides)


def test_the_calculator_task_writes_its_warm_start():
    from rlhf.models import resolve_model_path
    from rlhf.sft.data import warm_start_demonstrations

    cfg = load("experiment=calculator", "sft.data.size=16")
    assert cfg.sft.steps > 0
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2", None))
    demos = warm_start_demonstrations(cfg, tokenizer)
    assert len(demos) == 16
    for row in demos.rows(range(len(demos))):
        ids, mask = row["_ids"], row["_mask"]
        targets = tokenizer.decode([t for t, m in zip(ids, mask) if m])
        call, final = targets.split("<|im_end|>")[:2]
        # the call's expression is the task's own; the final turn gives the task's answer
        expression = row["messages"][1]["tool_calls"][0]["function"]["arguments"]["expression"]
        assert call == f'<tool_call>{json.dumps({"name": "calculator", "arguments": {"expression": expression}})}' \
                       "</tool_call>"
        assert final == f"The answer is {row['answer']}."
        assert numeric_match([""], [final], answer=[row["answer"]]) == [1.0]  # the run's reward passes it


def test_the_guess_number_task_writes_bisection_games_the_environment_scores_solved(monkeypatch):
    """Each demonstration played through a real episode of experiment=guess_number (its turns written by a scripted
    engine, the number the environment thinks of the demonstration's): token for token the demonstration, every guess
    the middle of what is left, the environment's replies its user turns, and the game solved within env.max_turns."""
    from rlhf.agents.episodes import EpisodeRunner
    from rlhf.agents.tasks import GuessNumber
    from rlhf.data import PromptBatch
    from rlhf.engines.base import Sample, SamplingSettings
    from rlhf.models import resolve_model_path
    from rlhf.rollout.timing import NO_TIMER
    from rlhf.sft.data import warm_start_demonstrations

    cfg = load("experiment=guess_number", "sft.data.size=12")
    assert cfg.sft.steps > 0 and cfg.env.max_turns >= GuessNumber.most_guesses()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("smollm2", None))
    demos = warm_start_demonstrations(cfg, tokenizer)  # within the preset's budgets, or it would raise
    eos = tokenizer.eos_token_id
    runner, real_reset = EpisodeRunner(None, cfg, tokenizer), GuessNumber.reset
    for row in demos.rows(range(len(demos))):
        ids, mask = row["_ids"], row["_mask"]
        turns, turn = [], []  # the target runs: each assistant turn's tokens and its stop token
        for token, target in zip(ids, mask):
            if target:
                turn.append(token)
            if target and token == eos:
                turns, turn = turns + [turn], []
        guesses = [int(tokenizer.decode(t[:-1])) for t in turns]
        low, high = GuessNumber.LOW, GuessNumber.HIGH
        for guess in guesses:  # bisection: the middle of what is left, then the half the reply names
            assert guess == (low + high) // 2
            low, high = (guess + 1, high) if guess < row["secret"] else (low, guess - 1)
        assert guesses[-1] == row["secret"] and len(guesses) <= GuessNumber.most_guesses()

        scripted = iter(turns)

        def engine(actors, prompts, n, sampling, version=None, scripted=scripted):
            return [[Sample(ids, [-0.5] * len(ids), tokenizer.decode(ids[:-1]), False)]
                    for ids in (next(scripted) for _ in prompts)]

        def reset(self, secret=row["secret"], **columns):  # the number is the demonstration's
            observation = real_reset(self, **columns)
            self.secret = secret
            return observation

        monkeypatch.setattr("rlhf.rollout.generation.generate", engine)
        monkeypatch.setattr(GuessNumber, "reset", reset)
        batch = PromptBatch([{"prompt": cfg.data.task, "index": 0}], [[0]], [""])
        [[episode]] = runner.rollout(batch, 1, SamplingSettings(cfg.rollout.max_new_tokens, 1.0, 1.0, seed=0), None,
                                     NO_TIMER)
        assert episode.prompt_ids + episode.completion_ids == ids  # the episode the model would play
        assert [0] * len(episode.prompt_ids) + episode.model_mask == mask
        replies = [m["content"] for m in row["messages"] if m["role"] == "user"][1:]
        assert [m["content"] for m in episode.messages if m["role"] == "user"] == replies
        assert episode.turns == len(guesses) and not episode.truncated
        assert episode.env_reward == pytest.approx(1.0 - 0.1 * (len(guesses) - 1))  # solved
    runner.close()
