"""A tiny random Llama with a byte-level BPE tokenizer trained locally: a real model for fast tests."""

from pathlib import Path

from rlhf.models.folders import write_atomically

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
# Enough text for a byte-level BPE to learn some merges; every byte is in the alphabet anyway.
_CORPUS = [
    "the cat sat on the mat. a dog is on the log. what is 3 plus 4? the answer is 7.",
    "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?",
    "a a a a b b b b c c c c. one two three four five six seven eight nine ten.",
]


def build_tiny_model(folder: str | Path, vocab_size: int = 512, hidden: int = 64, layers: int = 2, seed: int = 0,
                     reward_model: bool = False, initializer_range: float = 0.02) -> Path:
    """Write a tiny LlamaForCausalLM + tokenizer to `folder` (atomically) and return it. Under a second.
    `reward_model=True`: a LlamaForSequenceClassification with one label instead (a tiny reward model).
    `initializer_range`: the weights' std. At 0.02 the (tied) embeddings are so small that with them and the
    final norm frozen (LoRA) no token can get much more likely than its neighbours: LoRA tests want ~0.3."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "config.json").exists():
        return folder

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,  # head_dim 32: vLLM-CPU attention has no kernel for 16
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=initializer_range,
    )
    if reward_model:
        config.num_labels = 1
    model = LlamaForSequenceClassification(config) if reward_model else LlamaForCausalLM(config)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    write_atomically(folder, save)
    return folder
