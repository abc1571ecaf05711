import json
from types import SimpleNamespace

import pytest

from rlhf.data import PromptStream, load_rows
from rlhf.data.row_names import RowNames


def file_cfg(path, bad_rows="error", **columns):
    return SimpleNamespace(source="file", path=str(path), task=None, size=None, seed=0, bad_rows=bad_rows,
                           columns={"prompt": "prompt", "references": "references", "answer": None, **columns})


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_reasoning_gym_rows_have_references():
    cfg = SimpleNamespace(source="reasoning_gym", task="gsm_symbolic", size=4, seed=0, path=None, bad_rows="error",
                          columns={"prompt": "question", "references": "answer_cot", "answer": "answer"})
    rows = load_rows(cfg)
    assert len(rows) == 4
    assert all(isinstance(r["prompt"], str) and r["references"] and r["answer"] for r in rows)
    assert rows == load_rows(cfg)  # seeded: the same questions every time


def test_jsonl_with_column_mapping_and_string_reference(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "hi", "ref": "hello", "extra": 1}])
    rows = load_rows(file_cfg(path, prompt="q", references="ref"))
    assert list(rows) == [{"prompt": "hi", "references": ["hello"], "extra": 1, "_row": 0}]  # _row: where it was read


def test_misnamed_column_is_named_with_those_found(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "hi", "references": ["x"]}])
    with pytest.raises(ValueError, match=r"data.columns.prompt='prompt'.*found: \['question', 'references'\]"):
        load_rows(file_cfg(path))


def test_empty_dataset(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match="no rows"):
        load_rows(file_cfg(path))


def test_blank_prompt_row_is_named(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok", "references": ["x"]}, {"prompt": " ", "references": ["x"]}])
    with pytest.raises(ValueError, match=rf"data.path='{path}', line 2: prompt"):
        load_rows(file_cfg(path))


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rows(file_cfg(tmp_path / "nope.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported format"):
        load_rows(file_cfg(tmp_path / "d.txt"))


def test_parquet(tmp_path):
    import pandas as pd

    pd.DataFrame({"prompt": ["a", "b"], "references": [["x"], ["y"]]}).to_parquet(tmp_path / "d.parquet")
    assert [r["references"] for r in load_rows(file_cfg(tmp_path / "d.parquet"))] == [["x"], ["y"]]


def test_stream_applies_the_chat_template_and_cycles(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"prompt": f"question {i}"} for i in range(3)]
    stream = PromptStream(rows, tok, system_prompt="be brief", max_prompt_tokens=200, seed=1)
    batch = stream.next_batch(2)
    assert batch.texts[0].startswith("<|im_start|>system\nbe brief<|im_end|>")
    assert batch.texts[0].endswith("<|im_start|>assistant\n")
    # the fast tokenizer's batch encoder gives the ids the tokenizer's own call does
    assert batch.token_ids == tok(batch.texts, add_special_tokens=False)["input_ids"]
    seen = [r["prompt"] for r in batch.rows + stream.next_batch(1).rows]
    assert sorted(seen) == sorted(r["prompt"] for r in rows)  # one epoch visits every row once
    stream.next_batch(2)
    assert stream.state_dict() == {"epoch": 1, "position": 2}

    # a stream restored from that cursor continues exactly where this one goes on
    restored = PromptStream(rows, tok, system_prompt="be brief", max_prompt_tokens=200, seed=1)
    restored.load_state_dict(stream.state_dict())
    assert restored.next_batch(5).rows == stream.next_batch(5).rows


def test_a_conversational_prompt_with_its_own_system_message_keeps_one(tiny_model):
    # data.system_prompt joins the row's system message, as episodes, agents and SFT demonstrations render it
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [{"prompt": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+3?"}]}]
    batch = PromptStream(rows, tok, system_prompt="be brief", max_prompt_tokens=200, seed=1).next_batch(1)
    assert batch.texts[0].startswith("<|im_start|>system\nYou are terse.\n\nbe brief<|im_end|>\n<|im_start|>user")


def test_prompt_longer_than_the_limit_is_named(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(ValueError, match=r"data row 2: prompt has \d+ tokens"):  # rows of its own: 1-based
        PromptStream([{"prompt": "hi"}, {"prompt": "word " * 200}], tok, None, max_prompt_tokens=50, seed=0)


@pytest.mark.parametrize("lines, message", [
    ([b'{"prompt": "a", "references": ["x"]}', b'{"prompt": "caf\xe9", "references": ["x"]}'],
     r"line 2: not valid UTF-8 \(byte 16 of the line is b'\\xe9'\)"),
    ([b'{"prompt": "a", "references": ["x"]}', b'', b'{"prompt": "b", "refer'],
     r"line 3: not valid JSON at column 17 \(Unterminated string starting at\); a truncated line\?"),
    ([b'["prompt", "a"]'], r"line 1: a JSON list, not an object"),
])
def test_a_bad_jsonl_line_is_named_by_file_and_line(tmp_path, lines, message):
    from rlhf.data.sources import file_rows

    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(ValueError, match=rf"data.path='{path}', {message}"):
        file_rows(str(path))


def test_jsonl_rows_get_every_column_and_skip_blank_lines(tmp_path):
    from rlhf.data.sources import file_rows

    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "references": ["x"]}\n\n{"prompt": "b", "answer": "2"}\n')
    assert list(file_rows(str(path))) == [{"prompt": "a", "references": ["x"], "answer": None},
                                          {"prompt": "b", "references": None, "answer": "2"}]


def test_bad_rows_skip_drops_each_kind_logs_them_and_keeps_the_rest(tmp_path, caplog, tiny_model):
    from transformers import AutoTokenizer

    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join([
        b'{"prompt": "good one", "references": ["x"]}',
        b'{"prompt": "caf\xe9", "references": ["x"]}',            # line 2: not UTF-8
        b'{"prompt": "cut", "references": ["x"',                    # line 3: truncated
        b'{"prompt": "  ", "references": ["x"]}',                   # blank prompt
        b'{"prompt": "no reference", "references": null}',          # missing reference
        b'{"prompt": "bad reference", "references": [1, 2]}',       # malformed reference
        b'{"prompt": "' + b"word " * 100 + b'", "references": ["x"]}',  # over-long prompt
        b'{"prompt": "good two", "references": "y"}',
    ]) + b"\n")
    with pytest.raises(ValueError, match="line 2: not valid UTF-8"):
        load_rows(file_cfg(path))  # the default stops at the first bad row
    with caplog.at_level("WARNING"):
        rows = load_rows(file_cfg(path, bad_rows="skip"))
        stream = PromptStream(rows, AutoTokenizer.from_pretrained(tiny_model), None, max_prompt_tokens=50, seed=0, bad_rows="skip")
    everything = stream.everything()
    assert [r["prompt"] for r in everything.rows] == ["good one", "good two"]
    assert len(everything.token_ids) == len(everything.texts) == 2
    logged = caplog.text
    assert "dropped 5 of" in logged and "line 2: not valid UTF-8" in logged and "line 3: not valid JSON" in logged
    assert "prompt must be a non-empty string" in logged and "references must be" in logged
    assert "dropped 1 of 3 rows" in logged and "prompt has" in logged


def test_bad_rows_skip_stops_when_nothing_is_left(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": ""}\n[1]\n')
    with pytest.raises(ValueError, match=r"dropped every row .*line 2: a JSON list"):
        load_rows(file_cfg(path, bad_rows="skip", references=None))


def test_a_chat_template_file_and_its_kwargs_reach_the_prompts_and_message_lists_keep_their_roles(tiny_model,
                                                                                                  tmp_path):
    from transformers import AutoTokenizer

    from rlhf.data import read_chat_template

    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                        "{% if enable_thinking is false %}<no-think>{% endif %}"
                        "{% if add_generation_prompt %}<assistant>{% endif %}")
    rows = [{"prompt": "hi"}, {"prompt": [{"role": "system", "content": "be kind"},
                                          {"role": "user", "content": "hello"},
                                          {"role": "assistant", "content": "hey"},
                                          {"role": "user", "content": "again"}]}]
    stream = PromptStream(rows, AutoTokenizer.from_pretrained(tiny_model), None, 200, 0,
                          chat_template=read_chat_template(str(template)),
                          chat_template_kwargs={"enable_thinking": False})
    assert stream.everything().texts == ["<user>hi<no-think><assistant>",
                            "<system>be kind<user>hello<assistant>hey<user>again<no-think><assistant>"]
    with pytest.raises(FileNotFoundError, match="data.chat_template='/no/such.jinja' does not exist"):
        read_chat_template("/no/such.jinja")


def test_the_chat_template_kwargs_reach_the_eval_prompts_too(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from rlhf.config import compose_config, load_config
    from rlhf.data import prompt_sets

    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}{% if flavour %}<{{ flavour }}>{% endif %}")
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"q{i}", "references": ["r"]} for i in range(6)])
    cfg = load_config(compose_config("data=file", f"data.path={data}", f"data.chat_template={template}",
                                     "data.chat_template_kwargs={flavour: salty}", "eval.held_out=2",
                                     "output_dir=/tmp/x"))
    train, held_out = prompt_sets(cfg, AutoTokenizer.from_pretrained(tiny_model))
    train = train.everything()
    assert len(train.texts) == 4 and len(held_out.texts) == 2
    assert all(text.endswith("<salty>") for text in train.texts + held_out.texts)
    assert not set(train.texts) & set(held_out.texts)


def test_shards_globs_and_save_to_disk_folders_read_as_one_arrow_table(tmp_path, tiny_model):
    from datasets import Dataset
    from transformers import AutoTokenizer

    shards = tmp_path / "shards"
    shards.mkdir()
    for k in range(3):
        write_jsonl(shards / f"part-{k}.jsonl", [{"prompt": f"q{k}-{i}", "references": ["r"]} for i in range(4)])
    from_folder, from_glob = load_rows(file_cfg(shards)), load_rows(file_cfg(shards / "part-*.jsonl"))
    assert len(from_folder) == len(from_glob) == 12 and hasattr(from_folder, "column_names")  # Arrow, not Python
    saved = tmp_path / "saved"
    Dataset.from_list([{"prompt": "p1", "references": ["a"]}, {"prompt": "p2", "references": ["b"]}]).save_to_disk(saved)
    assert [r["prompt"] for r in load_rows(file_cfg(saved))] == ["p1", "p2"]
    stream = PromptStream(from_folder, AutoTokenizer.from_pretrained(tiny_model), None, 200, seed=0)
    batch = stream.next_batch(3)
    assert len(stream) == 12 and len(batch.rows) == 3 and batch.rows[0].keys() == {"prompt", "references"}
    assert batch.texts[0].endswith("<|im_start|>assistant\n") and batch.token_ids[0]
    assert len(stream.longest()) == max(map(len, stream.everything().token_ids))  # the memory pre-flight's case
    with pytest.raises(ValueError, match="mixes formats"):
        (shards / "extra.csv").write_text("prompt,references\nx,y\n")
        load_rows(file_cfg(shards))


def test_bad_rows_of_an_arrow_table_are_named_or_dropped(tmp_path, tiny_model, caplog):
    from transformers import AutoTokenizer

    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "fine", "references": ["x"]}, {"prompt": " ", "references": ["x"]},
                                              {"prompt": "word " * 100, "references": ["x"]}])
    with pytest.raises(ValueError, match=rf"data.path='{path}', line 2: prompt must be a non-empty string"):
        load_rows(file_cfg(path))
    rows = load_rows(file_cfg(path, bad_rows="skip"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    with pytest.raises(ValueError, match=rf"data.path='{path}', line 3: prompt has \d+ tokens, more than "
                                         "data.max_prompt_tokens=50"):
        PromptStream(rows, tokenizer, None, max_prompt_tokens=50, seed=0, names=RowNames(file_cfg(path)))
    with caplog.at_level("WARNING"):
        stream = PromptStream(rows, tokenizer, None, max_prompt_tokens=50, seed=0, bad_rows="skip")
    assert [r["prompt"] for r in stream.everything().rows] == ["fine"] and "dropped 1 of 2 rows" in caplog.text


def test_a_second_stream_over_the_same_data_reads_its_tokens_from_the_cache(tmp_path, tiny_model, monkeypatch):
    from transformers import AutoTokenizer

    from rlhf.data import prompts

    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"question {i}", "references": ["x"]} for i in range(20)])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    first = PromptStream(load_rows(file_cfg(path)), tokenizer, None, 200, seed=0).everything()

    def tokenize_again(*args, **kwargs):
        raise AssertionError("the prepared rows were not read back from the cache")

    monkeypatch.setattr(prompts.Renderer, "rows", tokenize_again)
    second = PromptStream(load_rows(file_cfg(path)), tokenizer, None, 200, seed=0).everything()
    assert second.token_ids == first.token_ids and second.texts == first.texts
    changed = tmp_path / "changed.jsonl"
    write_jsonl(changed, [{"prompt": "other", "references": ["x"]}])
    with pytest.raises(AssertionError, match="not read back"):  # new data: prepared anew
        PromptStream(load_rows(file_cfg(changed)), tokenizer, None, 200, seed=0)


# A bad row is named where the user finds it: a file's by file and 1-based line, whichever step finds it (the row
# checks, the prompt length after the held-out split), a generated data set's by its 1-based row
def test_a_bad_row_of_a_file_is_named_by_its_line_past_blank_lines_and_dropped_lines(tmp_path, caplog):
    arrow = tmp_path / "arrow.jsonl"  # read by Arrow: blank lines are no rows
    arrow.write_text('{"prompt": "a", "references": ["x"]}\n\n  \n{"prompt": "b", "references": ["x"]}\n'
                     '{"prompt": "", "references": ["x"]}\n')
    with pytest.raises(ValueError, match=rf"data.path='{arrow}', line 5: prompt must be"):
        load_rows(file_cfg(arrow))
    by_line = tmp_path / "by_line.jsonl"  # a bad line: read line by line, the bad one dropped before the row checks
    by_line.write_bytes(b'{"prompt": "caf\xe9"}\n\n{"prompt": "b", "references": ["x"]}\n{"prompt": "c", "references": []}\n')
    with caplog.at_level("WARNING"):
        assert [row["prompt"] for row in load_rows(file_cfg(by_line, bad_rows="skip"))] == ["b"]
    assert f"data.path='{by_line}', line 1: not valid UTF-8" in caplog.text
    assert f"data.path='{by_line}', line 4: references must be" in caplog.text


def test_a_bad_row_of_a_csv_is_named_by_the_line_its_record_starts_on_and_of_shards_by_its_own_file(tmp_path):
    table = tmp_path / "d.csv"
    table.write_text('prompt,references\n"two\nlines",x\n\nfine,x\n" ",x\n')
    with pytest.raises(ValueError, match=rf"data.path='{table}', line 6: prompt must be"):
        load_rows(file_cfg(table))
    shards = tmp_path / "shards"
    shards.mkdir()
    write_jsonl(shards / "part-0.jsonl", [{"prompt": "a", "references": ["x"]}] * 3)
    write_jsonl(shards / "part-1.jsonl", [{"prompt": "a", "references": ["x"]}, {"prompt": " ", "references": ["x"]}])
    with pytest.raises(ValueError, match=rf"data.path='{shards / 'part-1.jsonl'}', line 2: prompt must be"):
        load_rows(file_cfg(shards))


def test_an_over_long_prompt_is_named_by_its_line_after_the_held_out_split(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    from rlhf.config import compose_config, load_config
    from rlhf.data import prompt_sets

    rows = [{"prompt": f"q{i}", "references": ["r"]} for i in range(8)]
    rows[6]["prompt"] = "word " * 100
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = load_config(compose_config("data=file", f"data.path={data}", "data.max_prompt_tokens=50", "eval.held_out=2",
                                     "output_dir=/tmp/x"))
    with pytest.raises(ValueError, match=rf"data.path='{data}', line 7: prompt has \d+ tokens"):
        prompt_sets(cfg, AutoTokenizer.from_pretrained(tiny_model))


def test_a_bad_row_of_a_generated_data_set_is_named_by_its_1_based_row():
    cfg = SimpleNamespace(source="env", task="  ", size=3, seed=0, path=None, bad_rows="error",
                          columns={"prompt": "prompt"})
    with pytest.raises(ValueError, match=r"^data.source='env', row 1: prompt must be"):
        load_rows(cfg)
    generated = SimpleNamespace(source="reasoning_gym", task="gsm_symbolic", path=None)
    assert RowNames(generated)(4) == "data.source='reasoning_gym' ('gsm_symbolic'), row 5"
