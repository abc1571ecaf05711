"""BLEU must reproduce HF evaluate's smoothed sentence BLEU exactly: the spec's vectors (§2.8, T1-T4)."""

import pytest

from rlhf.rewards import bleu_score
from rlhf.rewards.bleu import tokenize_13a
from rlhf.rewards.functions import bleu, extract_answer

REF = "the cat is on the mat"


@pytest.mark.parametrize(
    "prediction, references, expected",
    [
        ("the cat sat on the mat", [REF], 0.488923),
        ("the cat is on the mat", [REF], 1.0),
        ("cat", [REF], 0.006738),
        ("there is a cat on the mat", [REF], 0.382603),
        ("a cat is on the mat", [REF], 0.809107),
        ("a cat is on the mat", ["there is a cat on the mat"], 0.430125),
        ("a cat is on the mat", [REF, "there is a cat on the mat"], 0.880112),
        ("the cat", [REF, "the cat sat"], 0.606531),
        ("the cat sat on the mat", ["a", REF], 0.488923),
        ("hello there general kenobi", ["hello there general kenobi", "hello there!"], 1.0),
    ],
)
def test_spec_vectors(prediction, references, expected):
    assert bleu_score(prediction, references) == pytest.approx(expected, abs=1e-6)


def test_unsmoothed_exact_match_is_one():
    assert bleu_score("hello there general kenobi", ["hello there general kenobi", "hello there!"], smooth=False) == 1.0


def test_multiple_references_beat_the_best_single_one():
    both = bleu_score("a cat is on the mat", [REF, "there is a cat on the mat"])
    singles = [bleu_score("a cat is on the mat", [r]) for r in (REF, "there is a cat on the mat")]
    assert both > max(singles)


def test_tokenizer_13a():
    assert " ".join(tokenize_13a("Hello, world! It's 3.5-4 (ok).")) == "Hello , world ! It's 3.5 - 4 ( ok ) ."


def test_empty_prediction_scores_zero():
    assert bleu_score("", [REF]) == 0.0


def test_references_must_be_a_list():
    with pytest.raises(TypeError, match="list of strings"):
        bleu_score("the cat", REF)
    with pytest.raises(ValueError, match="at least one reference"):
        bleu_score("the cat", [])


def test_bleu_reward_function_guards_blank_completions_and_reads_answer_tags():
    scores = bleu(prompts=["p", "p", "p"], completions=["  ", "<think>x</think><answer>the cat is on the mat</answer>",
                                                     "the cat sat on the mat"], references=[[REF]] * 3)
    assert scores == pytest.approx([0.0, 1.0, 0.488923], abs=1e-6)  # T4: whitespace scores 0
    assert extract_answer("no tags here ") == "no tags here"


def test_bleu_reward_function_names_the_missing_column():
    with pytest.raises(ValueError, match="references"):
        bleu(prompts=["p"], completions=["c"])
