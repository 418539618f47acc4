"""Readability: the Flesch reading ease of the rationale, squashed into (0, 1).

textstat 0.7 counts English syllables with NLTK's CMU dictionary, which it downloads on first
use: impossible offline. We compute the same formula (Flesch, 1948) with textstat's own fallback
syllable counter (pyphen's hyphenation dictionary, shipped with the package), so the score needs
no download:

.. math:: \\mathrm{FRE} = 206.835 - 1.015 \\frac{\\text{words}}{\\text{sentences}}
          - 84.6 \\frac{\\text{syllables}}{\\text{words}}

FRE is unbounded below (long sentences of long words); the score is
``1 / (1 + exp(-(FRE - 50) / 20))``: monotone, 0.5 at FRE 50 ("fairly difficult"), no clipping
ties between two hard texts.
"""

import functools
import math
import re

from lmcot.rewards.base import register
from lmcot.rewards.text import split_sentences

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+")


@functools.lru_cache(maxsize=1)
def _hyphenator():
    import pyphen

    return pyphen.Pyphen(lang="en_US")


def syllables(word: str) -> int:
    """Syllables of an English word: pyphen's hyphenation points plus one (numbers count 1).

    >>> syllables("producer"), syllables("film"), syllables("1966")
    (3, 1, 1)
    """
    if word.isdigit():
        return 1
    return len(_hyphenator().positions(word.lower())) + 1


def flesch_reading_ease(text: str) -> float | None:
    """Flesch reading ease of ``text``; None when it has no word.

    >>> round(flesch_reading_ease("The cat sat on the mat."), 1)  # 206.835 - 1.015*6 - 84.6*1
    116.1
    """
    words = _WORD.findall(text)
    if not words:
        return None
    n_sentences = max(1, len(split_sentences(text)))
    n_syllables = sum(syllables(w) for w in words)
    return 206.835 - 1.015 * len(words) / n_sentences - 84.6 * n_syllables / len(words)


@register("readability", "flesch")
class Readability:
    """Flesch reading ease squashed into (0, 1) (see the module docstring); None if no word.

    Blind spots: a formula on sentence length and syllables per word only: word salad of short
    words reads as "easy", and names with many syllables (common in HotpotQA) read as "hard".
    Reads only the rationale.
    """

    uses_gold = False

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        scores = []
        for rationale in completions:
            fre = flesch_reading_ease(rationale)
            scores.append(None if fre is None else 1 / (1 + math.exp(-(fre - 50) / 20)))
        return scores
