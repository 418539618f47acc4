"""Small, pure text helpers shared by the scorers and the corruptions.

Rationales are short English prose ("A was founded by B. B was born in C. So the answer is C."):
a regex sentence splitter with a few abbreviations is enough, and keeps every scorer free of
NLTK data downloads (nothing can be downloaded at run time on offline machines).
"""

import functools
import re

from lmcot.data.example import Example
from lmcot.metrics import normalize_answer
from lmcot.prompts import stated_answer

# abbreviations whose period does not end a sentence ("Jr. (born ...", "St. Louis")
_ABBREVIATIONS = ("Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Inc", "Co", "Ltd", "vs", "No")
_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_CONCLUSION = re.compile(
    r"^(?:so|therefore|thus|hence|in conclusion|the answer is|answer\s*:)\b", re.IGNORECASE
)

# function words: dropped when matching content, kept when judging fluency
STOPWORDS = frozenset(
    """a an the and or but of in on at to for from by with as is are was were be been being it
    its this that these those he she they his her their him them who whom which what when where
    how why also than then there has have had do does did not no yes so such into onto about
    over under after before both either neither while during one""".split()
)


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences at ``.``, ``!``, ``?`` followed by a capital or a digit.

    >>> split_sentences("Ed Wood Jr. was American. He lived in L.A. So the answer is yes.")
    ['Ed Wood Jr. was American.', 'He lived in L.A.', 'So the answer is yes.']
    >>> split_sentences("  ")
    []
    """
    parts, start = [], 0
    for match in _SPLIT.finditer(text):
        head = text[start : match.start()].rstrip(".!?\"')] ")
        if head.split(" ")[-1] in _ABBREVIATIONS:
            continue
        parts.append(text[start : match.end()].strip())
        start = match.end()
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def is_conclusion(sentence: str) -> bool:
    """Whether a sentence states the conclusion ("So ...", "Therefore ...", "The answer is ...").

    >>> is_conclusion("So the answer is yes."), is_conclusion("Sonia was born in Riga.")
    (True, False)
    """
    return bool(_CONCLUSION.match(sentence.strip()))


def claimed_answer(rationale: str) -> str | None:
    """The answer a rationale states explicitly in its last sentence ("... answer is X."), or None.

    The extraction rules are the readers' (``lmcot.prompts.stated_answer``), without the
    "So X" fallback: "So B was born in C." is a fact, not a claimed answer.

    >>> claimed_answer("B was born in C. So the answer is **Estford**.")
    'Estford'
    >>> claimed_answer("B was born in C.") is None
    True
    """
    sentences = split_sentences(rationale)
    return stated_answer(sentences[-1], connectives=False) if sentences else None


def content_tokens(text: str) -> list[str]:
    """Normalised tokens (HotpotQA answer normalisation) without function words.

    >>> content_tokens("The film was directed by Tim Burton.")
    ['film', 'directed', 'tim', 'burton']
    """
    return [t for t in normalize_answer(text).split() if t not in STOPWORDS]


@functools.lru_cache(maxsize=65_536)
def cached_tokens(text: str) -> tuple[str, ...]:
    """:func:`content_tokens` as a tuple, memoised: context sentences recur for every rationale."""
    return tuple(content_tokens(text))


def strip_title(title: str) -> str:
    """A Wikipedia title without its disambiguation suffix: how the text mentions the entity.

    >>> strip_title("Ed Wood (film)")
    'Ed Wood'
    """
    return re.sub(r"\s*\([^)]*\)\s*$", "", title).strip()


def mentions(text: str, name: str) -> bool:
    """Whether ``text`` mentions ``name`` as whole words, ignoring case and punctuation.

    >>> mentions("He met Scott Derrickson.", "Scott Derrickson"), mentions("Edwardian", "Ed")
    (True, False)
    """
    needle = normalize_answer(name)
    return bool(needle) and f" {needle} " in f" {normalize_answer(text)} "


def retrieve(example: Example, query: str, k: int) -> list[str]:
    """The ``k`` context sentences sharing most content words with ``query``, in context order.

    >>> ex = Example("1", "q?", [("A", ["Ed Wood was a director.", "He liked hats."]),
    ...                          ("B", ["Lyon is in France."])], "x")
    >>> retrieve(ex, "Was Ed Wood a director in France?", 2)
    ['Ed Wood was a director.', 'Lyon is in France.']
    """
    words = set(content_tokens(query))
    sentences = [s.strip() for _, sents in example.context for s in sents if s.strip()]
    overlap = [len(words & set(cached_tokens(s))) for s in sentences]
    best = sorted(range(len(sentences)), key=lambda i: -overlap[i])[:k]
    return [sentences[i] for i in sorted(best) if overlap[i] > 0]
