"""Consistency: the rationale's final claim agrees with the answer it leads to."""

from lmcot.metrics import f1, normalize_answer
from lmcot.rewards.base import register
from lmcot.rewards.text import claimed_answer, split_sentences

_YES_NO = ("yes", "no")


def answer_agreement(rationale: str, answers: list[str]) -> float | None:
    """How far a rationale's conclusion agrees with ``answers`` (the first is the one used to
    decide applicability; EM/F1 take the maximum over all).

    With an explicit conclusion ("... the answer is X"): the token F1 of X against the answers
    (official HotpotQA F1: no partial credit on yes/no). Without one: the fraction of the answer's
    tokens that the last sentence contains, or None for a yes/no answer, which a sentence of
    facts cannot state.

    >>> answer_agreement("B was born in Estford. So the answer is Estford.", ["Estford"])
    1.0
    >>> answer_agreement("Both are American. So the answer is no.", ["yes"])
    0.0
    >>> answer_agreement("It is based in Greenwich Village, New York.", ["Greenwich Village"])
    1.0
    >>> answer_agreement("Both are American.", ["yes"]) is None
    True
    """
    sentences = split_sentences(rationale)
    if not sentences or not answers:
        return None
    claim = claimed_answer(rationale)
    if claim is not None:
        return f1(claim, answers)
    if normalize_answer(answers[0]) in _YES_NO:
        return None
    last = set(normalize_answer(sentences[-1]).split())
    recalls = []
    for answer in answers:
        tokens = normalize_answer(answer).split()
        if tokens:
            recalls.append(sum(t in last for t in tokens) / len(tokens))
    return max(recalls, default=None)


@register("consistency", "answer_match")
class AnswerConsistency:
    """Agreement of the rationale's conclusion with the answer it leads to, in [0, 1].

    See :func:`answer_agreement`.

    The answer it leads to is the ``reader_answers`` column when given (the reader's
    answer with this rationale); otherwise the gold answers (``use_gold=True``), so the score
    becomes "the rationale concludes the right answer". With ``use_gold=False`` and no reader
    answers, every score is None (not applicable).

    Args:
        use_gold: fall back on the gold answers when no reader answers are given.

    Blind spots: lexical: a conclusion that paraphrases the answer ("the USA" vs "United States")
    scores low; it checks only the last sentence; yes/no answers count only when stated as
    "the answer is yes/no".
    """

    def __init__(self, use_gold: bool = True):
        self.use_gold = use_gold
        self.uses_gold = use_gold

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        readers = columns.get("reader_answers")
        examples = columns.get("examples")
        if readers is not None:
            references = [[a] for a in readers]
        elif self.use_gold and examples is not None:
            references = [ex.golds for ex in examples]
        elif self.use_gold:
            raise ValueError("consistency needs the column reader_answers or examples")
        else:
            return [None] * len(completions)
        if len(references) != len(completions):
            raise ValueError(f"{len(references)} answers for {len(completions)} completions")
        return [answer_agreement(c, refs) for c, refs in zip(completions, references)]
