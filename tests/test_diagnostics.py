"""Diagnostics on hand-made predictions whose counts are worked out in the comments."""

import io

from rich.console import Console

from lmcot.diagnostics import diagnose, print_table
from lmcot.methods import Prediction

KD = [  # (gold, rationale, prediction, em)
    (["Paris"], "Ann lives in Paris. So the answer is Paris.", "Paris", 1.0),  # gold in, pred in
    (["Paris"], "Ann lives in Lyon.", "Lyon", 0.0),  # gold out, pred in
    (["the Beatles"], "Beatles formed in 1960.", "Queen", 0.0),  # gold in (normalised), pred out
    (["no"], "It is not known.", "no", 1.0),  # "no" is not found inside "not": gold out, pred out
    (["yes"], "Yes, both are American.", "yes", 1.0),  # gold in, pred in
    (["USA", "United States"], "born in the United States", "", 0.0),  # alias in, empty pred out
]
STANDARD = ["no", "no", "no", "Paris", "", "yes"]


def predictions():
    kd = [
        Prediction(f"q{i}", "lm_guided_kd", r, p, g, em, em) for i, (g, r, p, em) in enumerate(KD)
    ]
    standard = [Prediction(f"q{i}", "standard", None, p, KD[i][0], 0.0, 0.0)
                for i, p in enumerate(STANDARD)]  # fmt: skip
    return standard + kd


def test_known_counts():
    d = diagnose(predictions())
    kd = d["lm_guided_kd"]
    assert kd["n"] == 6
    assert kd["rationale_has_gold"] == 4 / 6  # rows 0, 2, 4, 5
    assert kd["em_gold_in_rationale"] == {"em": 0.5, "n": 4}  # rows 0 and 4 right
    assert kd["em_gold_not_in_rationale"] == {"em": 0.5, "n": 2}  # row 3 right, row 1 wrong
    assert kd["prediction_in_rationale"] == 3 / 6  # rows 0, 1, 4
    assert kd["yes_no"] == {"gold_yes": 1, "gold_no": 1, "pred_yes": 1, "pred_no": 1}


def test_methods_without_rationales_get_only_the_yes_no_distribution():
    standard = diagnose(predictions())["standard"]
    assert standard == {
        "n": 6, "yes_no": {"gold_yes": 1, "gold_no": 1, "pred_yes": 1, "pred_no": 3}
    }  # fmt: skip


def test_an_empty_group_has_no_em():
    d = diagnose([Prediction("q0", "cot", "nothing useful", "x", ["y"], 0.0, 0.0)])["cot"]
    assert d["em_gold_in_rationale"] == {"em": None, "n": 0}


def test_printed_table():
    out = io.StringIO()
    print_table(diagnose(predictions()), Console(file=out, width=200))
    text = out.getvalue()
    assert "0.500 (4)" in text and "0.667" in text and "1/3" in text
