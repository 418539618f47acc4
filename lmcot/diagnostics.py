"""Where LM-guided accuracy is lost: does the rationale state the answer; does the reader use it?

String work on ``Prediction`` rows, for any reader. Strings are compared after the official
answer normalisation (``normalize_answer``) and only as whole words, so that the gold answer
"no" is not found inside "not" or "north". Per method, in ``results.json`` as
``diagnostics.<method>``:

- ``rationale_has_gold``: share of rationales that contain a gold answer (answer recall);
- ``em_gold_in_rationale`` / ``em_gold_not_in_rationale``: the reader's EM on those two groups,
  each with its count (a reader that follows its rationale scores high on the first);
- ``prediction_in_rationale``: share of predictions that appear in the rationale;
- ``yes_no``: gold yes/no questions and predicted yes/no answers (a reader answering "no" to
  every yes/no question sits at the prior, whatever the rationale says).

Methods without rationales (standard prompting) get only ``yes_no``.
"""

from collections import defaultdict

from rich.console import Console
from rich.table import Table

from lmcot.console import console as wide_console
from lmcot.methods import Prediction
from lmcot.metrics import normalize_answer


def _contains(text: str, answer: str) -> bool:
    """Whether the normalised ``answer`` occurs in the normalised ``text`` as whole words."""
    answer = normalize_answer(answer)
    return bool(answer) and f" {answer} " in f" {normalize_answer(text)} "


def _em(preds: list[Prediction]) -> dict:
    return {"em": sum(p.em for p in preds) / len(preds) if preds else None, "n": len(preds)}


def _yes_no(preds: list[Prediction]) -> dict:
    golds = [normalize_answer(p.gold[0]) if p.gold else "" for p in preds]
    answers = [normalize_answer(p.prediction) for p in preds]
    return {
        "gold_yes": golds.count("yes"),
        "gold_no": golds.count("no"),
        "pred_yes": answers.count("yes"),
        "pred_no": answers.count("no"),
    }


def diagnose_method(preds: list[Prediction]) -> dict:
    """The diagnostics of one method's rows (see the module docstring)."""
    out = {"n": len(preds)}
    if all(p.rationale is not None for p in preds):
        has_gold = [any(_contains(p.rationale, g) for g in p.gold) for p in preds]
        out["rationale_has_gold"] = sum(has_gold) / len(preds)
        out["em_gold_in_rationale"] = _em([p for p, h in zip(preds, has_gold) if h])
        out["em_gold_not_in_rationale"] = _em([p for p, h in zip(preds, has_gold) if not h])
        in_rationale = sum(_contains(p.rationale, p.prediction) for p in preds)
        out["prediction_in_rationale"] = in_rationale / len(preds)
    out["yes_no"] = _yes_no(preds)
    return out


def diagnose(predictions: list[Prediction]) -> dict:
    """Method -> diagnostics, in the order methods first appear."""
    by_method: dict[str, list[Prediction]] = defaultdict(list)
    for p in predictions:
        by_method[p.method].append(p)
    return {name: diagnose_method(preds) for name, preds in by_method.items()}


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _em_cell(group: dict | None) -> str:
    if group is None:
        return ""
    return f"{group['em']:.3f} ({group['n']})" if group["n"] else "— (0)"


def print_table(diagnostics: dict, console: Console | None = None) -> None:
    """A compact table of the diagnostics, one row per method, short enough for 80 columns."""
    console = console or wide_console()
    table = Table(
        title="does the reader follow the rationale?",
        caption="gold in: rationale states a gold answer · EM (n) on rationales with / without "
        "it · pred in: the answer appears in the rationale · y/n: yes/no counts",
    )
    for column in ("method", "gold in", "EM | gold in", "EM | gold out", "pred in", "gold y/n",
                   "pred y/n"):  # fmt: skip
        is_name = column == "method"
        table.add_column(column, justify="left" if is_name else "right", no_wrap=is_name)
    for name, d in diagnostics.items():
        yn = d["yes_no"]
        table.add_row(
            name, _share(d.get("rationale_has_gold")), _em_cell(d.get("em_gold_in_rationale")),
            _em_cell(d.get("em_gold_not_in_rationale")), _share(d.get("prediction_in_rationale")),
            f"{yn['gold_yes']}/{yn['gold_no']}", f"{yn['pred_yes']}/{yn['pred_no']}",
        )  # fmt: skip
    console.print(table)
