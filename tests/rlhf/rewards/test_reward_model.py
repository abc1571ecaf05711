import shutil

import pytest

from rlhf.models.tiny import build_tiny_model
from rlhf.rewards.reward_model import RewardModel


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("rm") / "rm", reward_model=True))


def test_scores_are_the_same_alone_or_in_a_padded_batch(tiny_reward_model):
    model = RewardModel(tiny_reward_model, batch_size=4, max_length=128)
    completions = ["the cat sat", "a much longer answer about the dog on the log", ""]
    together = model.score(["q"] * 3, completions)
    alone = [model.score(["q"], [c])[0] for c in completions]
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(round(s, 6) for s in together)) == 3  # a real model: different texts, different scores


def test_a_reward_model_folder_without_a_tokenizer_is_named(tiny_reward_model, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_reward_model}/{name}", bare / name)
    with pytest.raises(ValueError, match=r"reward model .*bare.* tokenizer"):
        RewardModel(str(bare), batch_size=4, max_length=128)


def test_chat_template_kwargs_reach_the_reward_models_template(tiny_reward_model):
    model = RewardModel(tiny_reward_model, batch_size=4, max_length=128, chat_template_kwargs={"flavour": "salty"})
    model.tokenizer.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                                     "{% if flavour %}[{{ flavour }}]{% endif %}")
    assert model.text("q", "a") == "<user>q<assistant>a[salty]"
