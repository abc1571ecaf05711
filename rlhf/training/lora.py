"""LoRA for the learners (peft): only the adapter trains and is in the optimizer; the rollout engines and the
exported model get merged weights, computed beside the live ones (merging in place and back would drift the
base weights by rounding at every push, and a resumed run would not match an uninterrupted one)."""

import torch


def add_adapter(model, lora_cfg, task_type: str):
    """`model` wrapped by peft with a fresh adapter (B = 0: the wrapped model computes what `model` did).
    `task_type`: CAUSAL_LM (policy) or TOKEN_CLS (critic: its value head trains whole, beside the adapter)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                        target_modules=list(lora_cfg.target_modules), task_type=task_type)
    return get_peft_model(model, config)


TIED_NAMES = ("embed_tokens", "lm_head")


def check_tied_targets(target_modules: list[str], tied_embeddings: bool) -> None:
    """LoRA on one of two tied matrices cannot be merged into both: the merged weights would differ from the live
    adapted model (a tiny tied Llama's logits by up to 12), and vLLM, which loads no lm_head for tied models, would
    sample from yet another model. Refused with the reason."""
    tied = [t for t in target_modules if t.split(".")[-1] in TIED_NAMES]
    if tied_embeddings and tied:
        raise ValueError(f"train.lora.target_modules names {tied}, but the model ties its input embeddings to its "
                         "output layer (tie_word_embeddings): an adapter on one of them cannot be merged into both, "
                         "so the engines would sample another model than the one trained; leave them out of "
                         "train.lora.target_modules")


def disable_dropout(model) -> None:
    """Every dropout of the model at 0 (TRL's disable_dropout, and the rates attention layers keep as numbers, e.g.
    Llama's `attention_dropout`): an RL loss compares logprobs of one policy, and the loss's forward (train mode)
    must compute what the old, reference and engine logprobs (eval mode) did."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)


def is_adapted(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merged_state_dict(model) -> dict[str, torch.Tensor]:
    """The plain model's state dict (its own names) with every adapted layer's weight W + B A x scale; the
    adapter's tensors left out. Nothing of `model` changes."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    state = {name.replace(".base_layer.", "."): tensor.detach() for name, tensor in base.state_dict().items()
             if ".lora_" not in name}
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer):
                weight = module.base_layer.weight
                state[f"{name}.weight"] = weight.detach() + module.get_delta_weight("default").to(weight.dtype)
    return state


def plain_model(config, merged_state: dict[str, torch.Tensor]):
    """A plain causal LM of `config` holding `merged_state` (from `merged_state_dict`), on the CPU (for `final/`)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict({k: v.cpu() for k, v in merged_state.items()}, strict=True)
    return model
