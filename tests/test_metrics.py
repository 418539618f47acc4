"""EM and F1 against hand-computed cases of the official HotpotQA normalisation."""

import pytest

from lmcot.metrics import exact_match, f1, normalize_answer


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("The Beatles", "beatles"),  # article and case
        ("an Apple a day", "apple day"),  # every article, not only a leading one
        ("Theatre", "theatre"),  # 'the' inside a word stays
        ("U.S.A.", "usa"),  # punctuation removed, not replaced by spaces
        ("  New   York\tCity ", "new york city"),  # whitespace collapsed
        ("rock-'n'-roll!", "rocknroll"),
        ("Café", "café"),  # non-ASCII letters are not punctuation
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match_normalises_both_sides_and_takes_the_best_alias():
    assert exact_match("the beatles.", "The Beatles") == 1.0
    assert exact_match("Beatles band", "The Beatles") == 0.0
    assert exact_match("USA", ["United States", "U.S.A."]) == 1.0
    assert exact_match("Canada", ["United States", "U.S.A."]) == 0.0


def test_f1_token_overlap():
    # pred tokens {barack, obama}, gold {barack, hussein, obama}: p = 1, r = 2/3, f1 = 0.8
    assert f1("Barack Obama", "Barack Hussein Obama") == pytest.approx(0.8)
    # repeated tokens count once per occurrence: pred [a1, a1], gold [a1]: p = 1/2, r = 1
    assert f1("paris paris", "paris") == pytest.approx(2 / 3)
    assert f1("London", "Paris") == 0.0


def test_f1_yes_no_noanswer_get_no_partial_credit():
    assert f1("yes", "yes") == 1.0
    assert f1("yes it is", "yes") == 0.0  # would be 0.5 without the rule
    assert f1("no", "no doubt") == 0.0
    assert f1("noanswer", "no answer") == 0.0


def test_f1_takes_the_maximum_over_aliases():
    # gold 1: p = 1/2, r = 1 -> 2/3; gold 2: exact -> 1.0
    assert f1("Elvis Presley", ["Presley", "Elvis Presley"]) == 1.0
    assert f1("Elvis Aaron", ["Presley", "Elvis Presley"]) == pytest.approx(0.5)


def test_empty_prediction_scores_zero():
    assert exact_match("", "Paris") == 0.0
    assert f1("", "Paris") == 0.0
