"""LoRA on the tiny model: the adapter's gradients, the merged weights, what trains and what a checkpoint holds."""

import os
from types import SimpleNamespace

import pytest
import torch

from rlhf.config import compose_config, load_config
from rlhf.training.lora import add_adapter, merged_state_dict, plain_model
from rlhf.training.logprobs import completion_logprobs
from test_policy import batch

LORA = SimpleNamespace(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


def adapted(tiny_model):
    from transformers import AutoModelForCausalLM

    model = add_adapter(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), LORA, "CAUSAL_LM")
    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at 0; give it a value so the adapter changes the output
            p.data = torch.randn(p.shape, generator=g) * 0.1
    return model


def test_the_adapters_gradients_match_a_plain_forward_with_the_merged_weight(tiny_model):
    from transformers import AutoModelForCausalLM

    model = adapted(tiny_model)
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    completion_logprobs(model, ids, mask, 4, 1.0).sum().backward()
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)

    # the same loss through a plain model whose q/v weights are W + (alpha / r) B A, A and B leaves of their own
    plain = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    leaves = {n: p.detach().clone().requires_grad_() for n, p in lora.items()}
    for name in [n for n in leaves if "lora_A" in n]:
        layer = plain.get_submodule(name.split("base_model.model.")[1].split(".lora_A")[0])
        a, b = leaves[name], leaves[name.replace("lora_A", "lora_B")]
        weight = layer.weight.detach() + (LORA.alpha / LORA.rank) * b @ a
        del layer.weight  # a plain tensor in the parameter's place carries the gradient back to A and B
        layer.weight = weight
    completion_logprobs(plain, ids, mask, 4, 1.0).sum().backward()
    for name, p in lora.items():
        assert torch.allclose(p.grad, leaves[name].grad, atol=1e-6), name


def test_the_merged_weights_are_a_plain_model_that_computes_what_the_adapted_one_does(tiny_model):
    model = adapted(tiny_model)
    ids = torch.randint(3, 100, (2, 7), generator=torch.Generator().manual_seed(2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = merged_state_dict(model)
    assert not any("lora_" in k or "base_layer" in k for k in state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing merged in place
    merged = plain_model(model.get_base_model().config, state)
    diff = (model(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max().item()
    assert diff < 1e-5


def learner(tiny_model, monkeypatch, *overrides):
    from rlhf.training.policy import PolicyLearner

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29563", "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    cfg = load_config(compose_config("experiment=smoke", "algo.kl.beta=0", "train.micro_batch_size=4",
                                     "train.lora.rank=4", "train.lora.target_modules=[q_proj,v_proj]",
                                     "output_dir=/tmp/unused", *overrides))
    return PolicyLearner(tiny_model, cfg.train, cfg.algo, 4, 5, 1.0, 0)


def test_only_the_adapter_trains_and_a_checkpoint_holds_it_and_resumes_exactly(tiny_model, monkeypatch, tmp_path):
    from transformers import AutoConfig

    experience = batch(AutoConfig.from_pretrained(tiny_model).vocab_size)
    first = learner(tiny_model, monkeypatch)
    optimized = [p for group in first.engine.optimizer.param_groups for p in group["params"]]
    trainable = [n for n, p in first.engine.module.named_parameters() if p.requires_grad]
    assert len(optimized) == len(trainable) and all("lora_" in n for n in trainable)
    base = {k: v.clone() for k, v in first.engine.module.state_dict().items() if "lora_" not in k}
    first.train_step(experience)
    assert all(torch.equal(base[k], v) for k, v in first.engine.module.state_dict().items() if "lora_" not in k)
    first.save_checkpoint(str(tmp_path / "policy"))
    (states,) = (tmp_path / "policy").rglob("*model_states.pt")
    saved = torch.load(states, weights_only=False)
    # the adapter, not the model (DeepSpeed keeps the tied output embedding under its second name, lm_head)
    assert all("lora_" in k for k in saved["module"] if not k.endswith("lm_head.weight"))
    assert sum(len(g["params"]) for g in saved["optimizer"]["param_groups"]) == len(trainable)

    resumed = learner(tiny_model, monkeypatch)
    resumed.load_checkpoint(str(tmp_path / "policy"))
    after_first, after_resumed = first.train_step(experience), resumed.train_step(experience)
    assert after_first == after_resumed  # bit-identical: every metric
    for (name, a), b in zip(first.engine.module.state_dict().items(), resumed.engine.module.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_reference_is_the_base_model_with_the_adapter_off(tiny_model, monkeypatch):
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlhf.training.logprobs import batch_logprobs

    experience = batch(AutoConfig.from_pretrained(tiny_model).vocab_size)
    policy = learner(tiny_model, monkeypatch, "train.lr=0.05")
    policy.train_step(experience)  # the adapter now changes the policy
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    expected = batch_logprobs(base, experience, 4, 1.0)
    assert torch.allclose(policy.reference_logprobs(experience), expected, atol=1e-6)
    assert not torch.allclose(policy.logprobs(experience), expected, atol=1e-4)


def test_lora_with_zero3_is_refused():
    with pytest.raises(ValueError, match="train.lora.rank=8 with train.zero_stage=3 is not supported"):
        load_config(compose_config("train.lora.rank=8", "train.zero_stage=3", "output_dir=/tmp/x"))


def test_the_critics_value_head_trains_whole_beside_its_adapter(tiny_model):
    from transformers import AutoModelForTokenClassification

    model = add_adapter(AutoModelForTokenClassification.from_pretrained(tiny_model, num_labels=1, dtype=torch.float32),
                        LORA, "TOKEN_CLS")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("score" in n and "lora_" not in n for n in trainable)
    assert all("lora_" in n or "score" in n for n in trainable)


def test_lora_on_a_tied_embedding_is_refused_at_start_up(tiny_model, tmp_path):
    from rlhf.driver import run
    from rlhf.training.lora import check_tied_targets

    # the tiny model (like SmolLM2, the default) ties its embeddings: merged weights would differ from the live
    # adapted model (logits by up to 12 on it)
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "train.lora.rank=4",
                                     "train.lora.target_modules=[q_proj,embed_tokens]", f"output_dir={tmp_path}"))
    with pytest.raises(ValueError, match=r"names \['embed_tokens'\], but the model ties its input embeddings"):
        run(cfg)  # before any actor
    with pytest.raises(ValueError, match=r"\['model.lm_head'\]"):
        check_tied_targets(["model.lm_head", "q_proj"], tied_embeddings=True)
    check_tied_targets(["lm_head", "embed_tokens"], tied_embeddings=False)  # untied: each merges into its own


def test_the_policy_computes_without_dropout_and_lora_dropout_is_refused(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlhf.training.lora import disable_dropout

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attention_dropout=0.5)
    model = add_adapter(model, SimpleNamespace(**{**vars(LORA), "dropout": 0.3}), "CAUSAL_LM")
    ids = torch.arange(3, 19)[None]
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout: two forwards of one policy differ
    disable_dropout(model)
    train_mode = model(ids).logits
    model.eval()
    torch.testing.assert_close(train_mode, model(ids).logits, atol=0, rtol=0)
    with pytest.raises(ValueError, match="train.lora.dropout=0.1: the policy's every forward runs without dropout"):
        load_config(compose_config("train.lora.rank=4", "train.lora.dropout=0.1", f"output_dir={tmp_path}"))
