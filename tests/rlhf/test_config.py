import pytest
from hydra.errors import ConfigCompositionException

from rlhf.config import compose_config
from rlhf.config import load_config


def test_default_config_is_valid_and_typed():
    cfg = load_config(compose_config("output_dir=/tmp/x"))
    assert cfg.algo.name == "grpo" and cfg.model.source == "smollm2"
    assert cfg.reward.functions[0].name == "bleu"


def test_presets_compose():
    smoke = load_config(compose_config("experiment=smoke", "output_dir=/tmp/x"))
    assert smoke.model.source == "tiny" and smoke.steps < 10
    pama = load_config(compose_config("experiment=pama", "output_dir=/tmp/x"))
    assert pama.reward.aggregation == "pama" and pama.reward.objective_labels() == ["bleu", "conciseness"]
    dr = load_config(compose_config("algo=dr_grpo", "output_dir=/tmp/x"))
    assert dr.algo.estimator.scale == "none" and dr.algo.loss.aggregation == "dr_grpo"


def test_unknown_key_is_refused():
    with pytest.raises(ConfigCompositionException, match="learning_rate"):
        compose_config("train.learning_rate=1e-5")


@pytest.mark.parametrize("override, message", [
    ("algo.loss.aggregation=mean", "algo.loss.aggregation='mean'"),
    ("algo.kl.estimator=k9", "algo.kl.estimator"),
    ("rollout.engine=sglang", "rollout.engine"),
    ("train.micro_batch_size=3", "does not divide the mini-batch of 8"),
    ("algo.update.mini_batches=3", "algo.update.mini_batches=3 does not divide the batch of 8"),
    ("algo.update.mini_batches=0", "algo.update.mini_batches=0 must be > 0"),
    ("algo.correction.mode=clip", "algo.correction.mode='clip' is not valid"),
    ("algo.correction.level=word", "algo.correction.level='word' is not valid"),
    ("algo.correction.mode=mask", "algo.correction.mode=mask needs algo.correction.high"),
    ("algo/correction=icepop", "-"),
    ("reference.ranks=3", "reference.ranks=3 does not divide the batch of 8"),
    ("algo.update.old_logprobs=cached", "algo.update.old_logprobs"),
    ("algo.group_size=1", "one sample has no std"),
    ("rollout.top_p=1.5", "rollout.top_p"),
    ("steps=0", "steps=0 must be > 0"),
    ("model.path=/abs/folder", "model.path=/abs/folder is not read by model.source=smollm2"),
    ("reward.weights=[0.5,0.5]", "reward.weights has 2 values for 1 objectives"),
    ("reward.aggregation=max", "reward.aggregation='max'"),
    ("reward.pama.granularity=sequence", "reward.pama.granularity"),
    ("reward.lsc.quantile=1.5", "reward.lsc.quantile"),
    ("reward.functions=[]", "configure at least one objective"),
    ("reward.functions=[{name: bleu, weight: 1},{name: bleu, weight: 2}]", "distinct labels"),
    ("algo.sampling.overlong_fraction=1.5", "algo.sampling.overlong_fraction=1.5 must be in"),
    ("checkpoint.keep_last=0", "checkpoint.keep_last"),
    ("omp_wait_policy=sleep", "omp_wait_policy=.sleep."),
    ("rollout.block_size=48", "rollout.block_size=48 must be a multiple of 32"),
    ("train.num_gpus=1.5", "train.num_gpus=1.5: Ray gives an actor a fraction of one GPU or whole GPUs"),
    ("reference.num_gpus=-1", "reference.num_gpus=-1.0 must be >= 0"),
    ("train.offload_optimizer=true", "train.offload_optimizer needs train.zero_stage >= 1"),
    ("rollout.gpu_memory_utilization=1.2", "rollout.gpu_memory_utilization=1.2 must be in"),
    ("train.attn_implementation=flash", "train.attn_implementation='flash'"),
    ("rollout.weight_sync=ipc", "rollout.weight_sync='ipc'"),
    ("rollout.tensor_parallel_size=2", "spans 2 GPUs: set rollout.num_gpus=2"),
    ("rollout.tensor_parallel_size=0", "rollout.tensor_parallel_size=0 must be > 0"),
])
def test_bad_values_name_the_key(override, message):
    if message == "-":  # a preset that must load
        load_config(compose_config(override, "output_dir=/tmp/x"))
        return
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_config(compose_config(override, "output_dir=/tmp/x"))


@pytest.mark.parametrize("overrides, message", [
    (["algo/correction=tis", "algo.correction.low=0.5"], "algo.correction.low has no meaning for mode=truncate"),
    (["algo/correction=icepop", "algo.correction.level=sequence"], "mode=icepop is a token-level mask"),
    (["algo/correction=mis", "algo.correction.low=3"], r"algo.correction.low=3.0 must be in \[0, high=2.0\]"),
    (["rollout.mode=one_step_off"], "choose a rollout correction, e.g. algo/correction=tis"),
])
def test_rollout_corrections_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(compose_config(*overrides, "output_dir=/tmp/x"))


def test_a_preset_whose_clip_can_never_act_says_so():
    from rlhf.config import settings_that_cannot_act

    # GSPO, CISPO and DAPO take their papers' off-policy mini-batches: their clips can act
    for algo in ("gspo", "cispo", "dapo"):
        cfg = load_config(compose_config(f"algo={algo}", "output_dir=/tmp/x"))
        assert cfg.algo.update.mini_batches == 4 and settings_that_cannot_act(cfg) == []
    on_policy = load_config(compose_config("algo=dapo", "algo.update.mini_batches=1", "output_dir=/tmp/x"))
    [warning] = settings_that_cannot_act(on_policy)
    assert "the clip-higher range (clip_eps_low != clip_eps_high) can never act" in warning
    assert settings_that_cannot_act(load_config(compose_config("output_dir=/tmp/x"))) == []  # GRPO's symmetric clip


def test_critic_settings_are_checked_only_when_there_is_a_critic():
    load_config(compose_config("prompts_per_step=1", "train.micro_batch_size=4", "critic.micro_batch_size=3",
                               "output_dir=/tmp/x"))  # no critic
    with pytest.raises(ValueError, match="critic.micro_batch_size=3"):
        load_config(compose_config("algo=ppo", "prompts_per_step=1", "train.micro_batch_size=4",
                                   "critic.micro_batch_size=3", "output_dir=/tmp/x"))


def test_wrong_type_names_the_key():
    with pytest.raises(Exception, match="train.lr|lr"):
        load_config(compose_config("train.lr=fast", "output_dir=/tmp/x"))


def test_every_algorithm_preset_is_valid():
    for algo in ("grpo", "dr_grpo", "dapo", "ppo", "ppo_max", "rloo", "reinforce_pp", "reinforce_pp_baseline"):
        assert load_config(compose_config(f"algo={algo}", "output_dir=/tmp/x")).algo.name == algo


def test_unknown_algorithm_lists_the_presets():
    with pytest.raises(Exception, match="ppo"):
        compose_config("algo=ppo3")


def test_single_gpu_gives_every_role_a_share_of_one_gpu():
    cfg = load_config(compose_config("placement=single_gpu", "output_dir=/tmp/x"))
    shares = [cfg.rollout.num_gpus, cfg.train.num_gpus, cfg.reference.num_gpus, cfg.critic.num_gpus,
              cfg.reward_actor.num_gpus]
    assert cfg.placement.layout == "colocated" and all(0 < s < 1 for s in shares) and sum(shares) <= 1
    assert cfg.rollout.weight_sync == "auto" and cfg.rollout.sleep_mode is None and cfg.train.bf16 is None


def test_a_sleeping_engine_cannot_generate_behind_the_learner():
    with pytest.raises(ValueError, match="rollout.sleep_mode=true with rollout.mode=one_step_off"):
        load_config(compose_config("rollout.sleep_mode=true", "rollout.mode=one_step_off", "algo/correction=tis",
                                   "output_dir=/tmp/x"))


@pytest.mark.parametrize("overrides, message", [
    (["rollout.engine=hf"], "needs rollout.engine=vllm"),
    (["rollout.weight_sync=cuda_ipc"], "hands the weights to one process"),
])
def test_tensor_parallel_engines_refuse_what_cannot_feed_them(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(compose_config("rollout.tensor_parallel_size=2", "rollout.num_gpus=2", *overrides,
                                   "output_dir=/tmp/x"))
    load_config(compose_config("rollout.tensor_parallel_size=2", "rollout.num_gpus=2", "output_dir=/tmp/x"))
    # engines on other nodes: the engine's actor stages the weights in its own node's shared memory
    load_config(compose_config("rollout.tensor_parallel_size=2", "rollout.num_gpus=2", "rollout.weight_sync=object_store",
                               "output_dir=/tmp/x"))


def test_a_reward_functions_weight_defaults_to_one():
    cfg = load_config(compose_config("reward.functions=[{name: bleu}, {name: length, weight: 0.5}]", "output_dir=/tmp/x"))
    assert cfg.reward.objective_weights() == [1.0, 0.5]


@pytest.mark.parametrize("overrides, message", [
    # rollout.top_p: the engine's nucleus logprobs (logits [2, 1, 0, -1], T 0.9, top_p 0.9: -0.285 per token)
    # against the learner's full-vocabulary ones (-0.387)
    (["rollout.top_p=0.9"], "rollout.top_p=0.9: the engine samples from the nucleus"),
    (["algo.loss.dual_clip=1.0"], "algo.loss.dual_clip=1.0 must be > 1"),
    (["algo=cispo", "algo.loss.dual_clip=3"], "CISPO's weight is clipped already"),
    (["algo=rloo", "algo.kl.target=0.1", "algo.kl.reward_beta=0"], "from 0 it stays 0; start it at algo.kl.reward_beta > 0"),
    (["algo.kl.estimator=k1"], "k1's gradient in the loss has expectation zero"),
    (["algo.kl.reward_beta=0.05"], "with the 'group' estimator, which puts no KL in the reward"),
    (["algo.reward_clip=5"], "algo.reward_clip clips normalised rewards: it needs normalize_rewards in algo.transforms"),
    (["experiment=pama", "algo.transforms=[normalize_rewards]"],
     "normalize_rewards in algo.transforms with reward.aggregation=pama"),
    (["experiment=pama", "algo=dapo"], "algo.sampling.overlong_fraction with reward.aggregation=pama"),
    (["experiment=pama", "algo=dapo"], "algo.sampling.dynamic with reward.aggregation=pama"),
    (["reward.aggregation=normalized_sum", "algo.group_size=1", "algo.estimator.scale=none",
      "train.micro_batch_size=2", "reference.micro_batch_size=2", "critic.micro_batch_size=2"],
     "normalized_sum with algo.group_size=1: a group of one z-scores to 0"),
])
def test_settings_that_do_not_work_together_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ValueError, match="do not work together:(.|\n)*" + message.replace("(", r"\(")):
        load_config(compose_config(*overrides, "output_dir=/tmp/x"))


def test_the_reward_kl_has_its_own_estimator():
    ppo = load_config(compose_config("algo=ppo", "output_dir=/tmp/x")).algo
    assert (ppo.kl.reward_estimator, ppo.kl.estimator) == ("k1", "k3")  # k1 in the reward, never in the loss


def test_batch_transforms_are_named_once_from_the_registry():
    with pytest.raises(ValueError, match="algo.transforms='whiten' is not valid; choose one of .*'mask_truncated'"):
        load_config(compose_config("algo.transforms=[whiten]", "output_dir=/tmp/x"))
    with pytest.raises(ValueError, match="names a transform twice"):
        load_config(compose_config("algo.transforms=[whiten_advantages,whiten_advantages]", "output_dir=/tmp/x"))


def test_dict_settings_take_a_whole_dict_on_the_command_line():
    # a `{}` default would refuse `key={...}` (Hydra's struct mode: no new keys); null takes it
    cfg = load_config(compose_config("data.chat_template_kwargs={enable_thinking: false}",
                                     "eval.data={source: file, path: /abs/test.jsonl}", "output_dir=/tmp/x"))
    assert cfg.data.chat_template_kwargs == {"enable_thinking": False}
    assert cfg.eval.data == {"source": "file", "path": "/abs/test.jsonl"}
