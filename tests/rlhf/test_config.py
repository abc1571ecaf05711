import pytest
from hydra.errors import ConfigCompositionException

from conftest import compose
from rlhf.config import load_config


def test_default_config_is_valid_and_typed():
    cfg = load_config(compose("output_dir=/tmp/x"))
    assert cfg.algo.name == "grpo" and cfg.model.source == "smollm2"
    assert cfg.reward.functions[0].name == "bleu"


def test_presets_compose():
    smoke = load_config(compose("experiment=smoke", "output_dir=/tmp/x"))
    assert smoke.model.source == "tiny" and smoke.steps < 10
    dr = load_config(compose("algo=dr_grpo", "output_dir=/tmp/x"))
    assert dr.algo.advantage_scale == "none" and dr.algo.loss_aggregation == "dr_grpo"


def test_unknown_key_is_refused():
    with pytest.raises(ConfigCompositionException, match="learning_rate"):
        compose("train.learning_rate=1e-5")


@pytest.mark.parametrize("override, message", [
    ("algo.loss_aggregation=mean", "algo.loss_aggregation='mean'"),
    ("algo.kl_estimator=k9", "algo.kl_estimator"),
    ("rollout.engine=sglang", "rollout.engine"),
    ("train.micro_batch_size=3", "does not divide the batch of 16"),
    ("algo.group_size=1", "one sample has no std"),
    ("rollout.top_p=1.5", "rollout.top_p"),
    ("steps=0", "steps=0 must be > 0"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_config(compose(override, "output_dir=/tmp/x"))


def test_wrong_type_names_the_key():
    with pytest.raises(Exception, match="train.lr|lr"):
        load_config(compose("train.lr=fast", "output_dir=/tmp/x"))
