"""Model-free scorers from word overlap: factuality as n-gram support, logicality as hop order.

Fast (thousands of rationales per second), deterministic, and sharp where embeddings are blunt:
a swapped name or date changes the words even when it hardly moves an embedding.
"""

from collections.abc import Sequence

from lmcot.data.example import Example
from lmcot.rewards.base import register, require_examples
from lmcot.rewards.text import (
    cached_tokens,
    is_conclusion,
    mentions,
    split_sentences,
    strip_title,
)


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """The set of n-grams of a token list.

    >>> sorted(ngrams(["a", "b", "c"], 2))
    [('a', 'b'), ('b', 'c')]
    """
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def support(claim: Sequence[str], evidence: Sequence[str]) -> float:
    """Fraction of the claim's unigrams and bigrams that the evidence sentence contains.

    >>> support(["ed", "wood", "american"], ["ed", "wood", "was", "american"])  # 3/3 + 1/2
    0.8
    """
    grams = ngrams(claim, 1) | ngrams(claim, 2)
    found = grams & (ngrams(evidence, 1) | ngrams(evidence, 2))
    return len(found) / len(grams) if grams else 0.0


@register("factuality", "lexical")
class LexicalFactuality:
    """Support of each claim by one context sentence: for each rationale sentence (conclusions
    left out), the best :func:`support` over the context's sentences; the mean over sentences.

    In [0, 1]; None for a rationale with no claim. Content words only (function words and
    punctuation dropped, HotpotQA normalisation).

    Blind spots: paraphrase scores low ("born in" vs "native of"); a claim joining two sentences
    matches neither fully; a negation ("not") is a function word and is not seen; copying context
    scores 1.0 whether or not it is useful. Reads no gold annotation.
    """

    uses_gold = False

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        examples = require_examples(columns, completions, "factuality")
        scores = []
        for example, rationale in zip(examples, completions):
            claims = [cached_tokens(s) for s in split_sentences(rationale) if not is_conclusion(s)]
            claims = [c for c in claims if c]
            evidence = [cached_tokens(s) for _, sents in example.context for s in sents]
            if not claims:
                scores.append(None)
                continue
            best = [max((support(c, e) for e in evidence), default=0.0) for c in claims]
            scores.append(sum(best) / len(best))
        return scores


def topic(sentence: str, example: Example) -> str | None:
    """The paragraph title a sentence is about: the context paragraph sharing most content words.

    >>> ex = Example("1", "q?", [("Ed Wood", ["Ed Wood was a director."]),
    ...                          ("Lyon", ["Lyon is a city in France."])], "x")
    >>> topic("He made films in France, in a city.", ex)
    'Lyon'
    """
    words = set(cached_tokens(sentence))
    overlap = {
        title: len(words & set(cached_tokens(f"{title} {' '.join(sents)}")))
        for title, sents in example.context
    }
    best = max(overlap, key=overlap.get, default=None)
    return best if best is not None and overlap[best] > 0 else None


def hop_order(sentences: list[str], example: Example) -> float | None:
    """Fraction of sentences that come after their topic was introduced.

    A claim sentence is in order when the entity it is about (its :func:`topic` paragraph's
    title) is named in the question or in an earlier sentence, or when it continues the previous
    sentence's topic. A conclusion is in order only as the last sentence. Sentences with no
    topic are not counted; None if none is counted.

    >>> ex = Example("1", "Where was the founder of Korvath Mills born?",
    ...     [("Korvath Mills", ["Korvath Mills was founded by Delia Marsh."]),
    ...      ("Delia Marsh", ["Delia Marsh was born in Estford."])], "Estford")
    >>> chain = ["Korvath Mills was founded by Delia Marsh.", "Delia Marsh was born in Estford."]
    >>> hop_order(chain, ex), hop_order(chain[::-1], ex)  # 2/2, then 1/2
    (1.0, 0.5)
    """
    counted, in_order, previous = 0, 0, None
    for i, sentence in enumerate(sentences):
        if is_conclusion(sentence):
            counted, in_order = counted + 1, in_order + (i == len(sentences) - 1)
            continue
        title = topic(sentence, example)
        if title is None:
            continue
        name = strip_title(title)
        introduced = mentions(example.question, name) or any(
            mentions(s, name) for s in sentences[:i]
        )
        counted, in_order = counted + 1, in_order + (introduced or title == previous)
        previous = title
    return in_order / counted if counted else None


@register("logicality", "lexical")
class HopOrder:
    """Logicality as the order of the hops: :func:`hop_order` of the rationale's sentences.

    In [0, 1]. A bridge rationale must name the bridge entity before the sentence about it; the
    conclusion must come last.

    Blind spots: it checks the order of the chain, not that each step follows (a chain of true but
    irrelevant facts in a sensible order scores 1.0); comparison questions name both entities in
    the question, so any order of their facts scores the same; topics are found by word overlap,
    so pronoun-only sentences ("He was born there.") may get no topic and are skipped. Reads the
    context but no gold annotation.
    """

    uses_gold = False

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        examples = require_examples(columns, completions, "logicality")
        return [hop_order(split_sentences(c), ex) for ex, c in zip(examples, completions)]
