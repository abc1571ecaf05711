"""SFT settings refused with the reason, and the demonstrations experiment=calculator writes for its warm start."""

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
