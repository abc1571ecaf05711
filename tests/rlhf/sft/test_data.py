"""Demonstrations through the data path RL prompts take: files (Arrow) in TRL's formats without a mapping, a column
mapping, data.bad_rows naming the file and line, the held-out split and its eval prompts."""

import json

import pytest
from transformers import AutoTokenizer

from rlhf.config import compose_config, load_config
from rlhf.sft.data import demonstration_sets

CHAT = [{"role": "user", "content": "Say a."}, {"role": "assistant", "content": "a"},
        {"role": "user", "content": "Again."}, {"role": "assistant", "content": "a a"}]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sets(tiny_model, path, *overrides):
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "algo=sft", "data=file",
                                     f"data.path={path}", "output_dir=/tmp/unused", *overrides))
    return demonstration_sets(cfg, AutoTokenizer.from_pretrained(tiny_model))


def test_messages_files_need_no_mapping_and_hold_out_rows_with_their_targets(tiny_model, tmp_path):
    rows = [{"messages": CHAT, "answer": str(i)} for i in range(10)]
    train, held, prompts = sets(tiny_model, write(tmp_path / "chat.jsonl", rows), "eval.every=5", "eval.held_out=2")
    assert len(train) == 8 and len(held) == 2
    # the eval prompt is the conversation before its last assistant turn, the reference that turn
    assert prompts.rows[0]["prompt"] == CHAT[:3] and prompts.rows[0]["references"] == ["a a"]
    assert "answer" in prompts.rows[0] and "messages" not in prompts.rows[0]
    assert prompts.texts[0].endswith("<|im_start|>assistant\n")
    seqs = train.sequences(train.draw(3))
    assert len(seqs.ids) == 3 and seqs.targets == 3 * sum(train.sequences([0]).masks[0])


def test_a_mapped_column_and_prompt_completion(tiny_model, tmp_path):
    rows = [{"question": f"q{i}", "solution": "a a"} for i in range(4)]
    train, held, _ = sets(tiny_model, write(tmp_path / "qa.jsonl", rows), "eval.every=0", "data.columns.prompt=question",
                          "data.columns.references=null", "data.columns.completion=solution")
    assert len(train) == 4 and held is None


def test_bad_rows_are_named_by_file_and_line_or_skipped(tiny_model, tmp_path):
    rows = [{"messages": CHAT}, {"messages": CHAT[:1]}, {"messages": CHAT}]
    path = write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=r"bad.jsonl', line 2: the conversation has no assistant turn"):
        sets(tiny_model, path, "eval.every=0")
    train, _, _ = sets(tiny_model, path, "eval.every=0", "data.bad_rows=skip")
    assert len(train) == 2


def test_over_long_demonstrations_are_cut_with_data_truncate(tiny_model, tmp_path):
    rows = [{"prompt": "Say a.", "completion": "a " * 50}, {"prompt": "Say a.", "completion": "a"}]
    path = write(tmp_path / "long.jsonl", rows)
    with pytest.raises(ValueError, match="line 1: it has .* tokens after its prompt, more than rollout.max_new_tokens=16"):
        sets(tiny_model, path, "eval.every=0", "rollout.max_new_tokens=16")
    train, _, _ = sets(tiny_model, path, "eval.every=0", "rollout.max_new_tokens=16", "data.truncate=true")
    lengths = sorted(train.sequences(range(2)).lengths)
    assert len(train) == 2 and lengths[1] - lengths[0] <= 16


def test_reasoning_gym_rows_train_on_their_references(tiny_model):
    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "algo=sft", "data.size=6",
                                     "eval.held_out=2", "output_dir=/tmp/unused", "data.max_prompt_tokens=1024",
                                     "rollout.max_new_tokens=1024"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    train, held, prompts = demonstration_sets(cfg, tokenizer)
    assert len(train) == 4 and len(held) == 2
    row = prompts.rows[0]
    assert isinstance(row["prompt"], str) and row["references"][0].strip() and "answer" in row


def test_a_warm_start_on_the_runs_own_data_leaves_its_held_out_rows_out(tiny_model):
    from rlhf.data import prompt_sets
    from rlhf.sft.data import warm_start_demonstrations

    cfg = load_config(compose_config("model=path", f"model.path={tiny_model}", "data.size=8", "eval.held_out=3",
                                     "sft.steps=2", "data.truncate=true", "output_dir=/tmp/unused",
                                     "data.max_prompt_tokens=1024"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    demos = warm_start_demonstrations(cfg, tokenizer)
    _, held_out = prompt_sets(cfg, tokenizer)
    trained = {row["prompt"] for row in demos.rows(range(len(demos)))}
    assert len(demos) == 5 and not trained & {row["prompt"] for row in held_out.rows}
    # demonstrations of their own (sft.data) are all trained
    own = load_config(compose_config("model=path", f"model.path={tiny_model}", "data.size=8", "eval.held_out=3",
                                     "sft.steps=2", "data.truncate=true", "output_dir=/tmp/unused",
                                     "data.max_prompt_tokens=1024", "sft.data={seed: 5}"))
    assert len(warm_start_demonstrations(own, tokenizer)) == 8
