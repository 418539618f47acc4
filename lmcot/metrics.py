"""Exact match and token F1 with the official HotpotQA answer normalisation.

Both take one gold string or a list of accepted answers (2WikiMultiHopQA aliases) and return
the maximum over them, as the 2Wiki evaluation script does.
"""

import re
import string
from collections import Counter

_PUNCT = set(string.punctuation)
_SPECIAL = ("yes", "no", "noanswer")


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation and the articles a/an/the, collapse whitespace.

    >>> normalize_answer("  The  Eiffel-Tower, Paris! ")
    'eiffeltower paris'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _as_list(golds: str | list[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else list(golds)


def exact_match(prediction: str, golds: str | list[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold, else 0.0.

    >>> exact_match("the United States", ["USA", "United States"])
    1.0
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _as_list(golds)))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    # the official script gives no partial credit when either side is yes/no/noanswer
    if (pred in _SPECIAL or ref in _SPECIAL) and pred != ref:
        return 0.0
    pred_tokens, ref_tokens = pred.split(), ref.split()
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, golds: str | list[str]) -> float:
    """Token-level F1 of the normalised strings, maximised over golds.

    >>> round(f1("Barack Obama Sr.", "Barack Obama"), 3)  # p = 2/3, r = 1
    0.8
    >>> f1("no", "no way")
    0.0
    """
    return max(_f1(prediction, g) for g in _as_list(golds))
