import torch

from rlhf.engines import Sample
from rlhf.experience import Experience


def test_from_samples_pads_prompts_left_and_completions_right():
    samples = [[Sample([5, 6], [-0.5, -0.6], "ab", False), Sample([], [], "", False)],
               [Sample([7], [-0.7], "c", True), Sample([8, 9, 10], [-1.0, -1.1, -1.2], "def", True)]]
    exp = Experience.from_samples([[1, 2, 3], [4]], samples, pad_id=0)
    assert exp.prompt_ids.tolist() == [[1, 2, 3], [1, 2, 3], [0, 0, 4], [0, 0, 4]]
    assert exp.completion_ids.tolist() == [[5, 6, 0], [0, 0, 0], [7, 0, 0], [8, 9, 10]]
    assert exp.mask.tolist() == [[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]]
    assert exp.attention_mask[2].tolist() == [0, 0, 1, 1, 0, 0]
    assert torch.allclose(exp.rollout_logp[3], torch.tensor([-1.0, -1.1, -1.2]))
    parts = exp.split(3)
    assert [p.size for p in parts] == [3, 1] and parts[1].completion_ids.tolist() == [[8, 9, 10]]


def test_overlong_filtering_masks_only_truncated_completions():
    samples = [[Sample([5, 6], [-0.5, -0.6], "ab", False), Sample([7, 8], [-0.7, -0.8], "cd", True)]]
    exp = Experience.from_samples([[1]], samples, pad_id=0)
    assert exp.truncated.tolist() == [False, True]
    assert exp.keeping(~exp.truncated).mask.tolist() == [[1, 1], [0, 0]]  # DAPO's overlong filtering
    assert exp.mask.tolist() == [[1, 1], [1, 1]]  # the original is left alone


def test_an_episodes_environment_tokens_are_context_not_training():
    from rlhf.agents.episodes import Episode

    episode = Episode([5, 6, 7, 8], [-1.0, 0.0, 0.0, -2.0], "t", False, prompt_ids=[1, 2, 3], model_mask=[1, 0, 0, 1])
    plain = Sample([9], [-0.5], "s", True)
    exp = Experience.from_samples([[4]], [[episode, plain]], pad_id=0)
    assert exp.prompt_ids.tolist() == [[1, 2, 3], [0, 0, 4]]  # an episode brings its own prompt
    assert exp.mask.tolist() == [[1, 0, 0, 1], [1, 0, 0, 0]]
    assert exp.context_mask.tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]
    assert exp.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 0]]  # the model sees them
