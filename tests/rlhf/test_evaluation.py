"""Evaluation's pure parts: pass@k, the held-out split, when it runs, keep_best."""

import json

import pytest

from rlhf.checkpoint import complete_checkpoints, save_checkpoint
from rlhf.config import compose_config, load_config
from rlhf.data import hold_out
from rlhf.evaluation import due, pass_at_k


def test_pass_at_k_against_hand_counted_cases():
    # 4 completions, 1 passes: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6 = 1/2 (of the 6 pairs, 3 hold it)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    # 5 completions, 2 pass, k = 3: the only failing triples are drawn from the 3 failures: 1 of C(5,3) = 10
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    with pytest.raises(ValueError, match="0 < k <= n"):
        pass_at_k(2, 1, 3)


def test_the_held_out_rows_are_fixed_by_the_data_seed_and_never_train():
    rows = [{"prompt": f"q{i}"} for i in range(40)]
    train, held = hold_out(rows, 8, seed=0)
    assert len(held) == 8 and len(train) == 32
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}
    assert hold_out(rows, 8, seed=0)[1] == held and hold_out(rows, 8, seed=1)[1] != held
    with pytest.raises(ValueError, match="eval.held_out=40 leaves no training rows"):
        hold_out(rows, 40, seed=0)


def test_evaluations_come_before_the_first_step_and_at_every_multiple():
    cfg = load_config(compose_config("output_dir=/tmp/x", "steps=28"))
    assert cfg.eval.every == 7 and cfg.eval.held_out == 32  # the default experiment's
    assert [s for s in range(cfg.steps + 1) if due(s, cfg)] == [0, 7, 14, 21, 28]
    # the weights after the last step are evaluated whether or not steps is a multiple of eval.every
    uneven = load_config(compose_config("output_dir=/tmp/x", "steps=30"))
    assert [s for s in range(uneven.steps + 1) if due(s, uneven)] == [0, 7, 14, 21, 28, 30]


def test_keep_best_writes_a_checkpoint_before_every_evaluation_it_ranks():
    from rlhf.driver import checkpoint_due

    # the defaults: 28 steps, eval every 7, checkpoints every 10. The eval at step k ranks the weights saved after
    # step k - 1: 6, 13, 20 had no checkpoint, so keep_best could only return the last one
    plain = load_config(compose_config("output_dir=/tmp/x"))
    assert [s for s in range(plain.steps) if checkpoint_due(s, plain)] == [9, 19, 27]
    ranked = load_config(compose_config("output_dir=/tmp/x", "checkpoint.keep_best=eval/bleu"))
    assert [s for s in range(ranked.steps) if checkpoint_due(s, ranked)] == [6, 9, 13, 19, 20, 27]
    never = load_config(compose_config("output_dir=/tmp/x", "checkpoint.keep_best=eval/bleu", "checkpoint.every=0"))
    assert [s for s in range(never.steps) if checkpoint_due(s, never)] == [6, 13, 20, 27]


@pytest.mark.parametrize("overrides, message", [
    (["eval.samples=4"], "greedy completions of a prompt are all the same"),
    (["eval.data={pth: /x.jsonl}"], r"eval.data: \['pth'\] are not data settings"),
    (["eval.pass_objective=accuracy"], "eval.pass_objective='accuracy' is not valid"),
    (["checkpoint.keep_best=eval/blue"], "checkpoint.keep_best='eval/blue' is not valid; choose one of"),
    (["checkpoint.keep_best=eval/bleu", "eval.every=0"], "set eval.every > 0"),
    (["eval.max_new_tokens=1000"], "exceeds rollout.max_new_tokens"),
])
def test_eval_settings_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(compose_config("output_dir=/tmp/x", *overrides))


def test_keep_best_keeps_the_best_checkpoint_besides_the_last_ones(tmp_path):
    def write(folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "weights").write_text("w")

    for step in range(5):
        keep = "step-000001" if step > 1 else None
        save_checkpoint(tmp_path, step, write, {"step": step}, keep_last=2, keep=keep)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-000001", "step-000003", "step-000004"]
    assert json.loads((tmp_path / "step-000001" / "driver.json").read_text())["step"] == 1


def own_threshold(prompts, completions, **_):
    return [float(c == "right") for c in completions]


own_threshold.pass_threshold = 0.5  # a function of the user's may define passing, as the built-in verifiers do


@pytest.mark.parametrize("overrides, threshold, line", [
    # BLEU (the default) is never 1: without a threshold of the user's, no pass@k, and the eval line says so
    ([], None, "no pass@k: bleu defines no passing (eval.pass_threshold would set one)"),
    (["eval.pass_threshold=0.3"], 0.3, "pass@k: bleu >= 0.3 (eval.pass_threshold)"),
    (["reward.functions=[{name: numeric_match}]"], 1.0, "pass@k: numeric_match >= 1 (the reward's own threshold)"),
    ([f"eval.rewards=[{{name: bleu}}, {{name: '{__name__}:own_threshold', label: mine}}]", "eval.pass_objective=mine"],
     0.5, "pass@k: mine >= 0.5 (the reward's own threshold)"),
])
def test_pass_at_k_only_where_the_objective_defines_passing(overrides, threshold, line):
    from rlhf.console import eval_line
    from rlhf.passing import pass_rule

    rule = pass_rule(load_config(compose_config("output_dir=/tmp/x", *overrides)))
    assert rule.threshold == threshold
    assert eval_line(7, {"eval/bleu": 0.13612, "eval/length": 93.0, "time/eval": 1.5}, rule) == \
        f"step 7 eval: bleu 0.1361, length 93; {line}"


def test_keep_best_on_a_pass_at_k_that_is_never_logged_is_refused():
    from rlhf.passing import pass_rule

    with pytest.raises(ValueError, match=r"checkpoint.keep_best='eval/pass@1': the pass objective 'bleu' defines no "
                                         "passing, so no pass@k is logged; set eval.pass_threshold"):
        pass_rule(load_config(compose_config("output_dir=/tmp/x", "checkpoint.keep_best=eval/pass@1")))
