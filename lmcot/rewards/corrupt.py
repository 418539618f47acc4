"""Gold rationales and the corruptions that validate the scorers (and the tests).

The intact rationale of a row is its gold supporting sentences in order, then the conclusion
"So the answer is <answer>."; its paraphrased twin rewords the same facts
(:mod:`lmcot.rewards.paraphrase`). Every corruption applies to either. Each corruption damages
one thing; ``ASPECT_CORRUPTIONS`` says
which aspect each one is about, so a scorer is judged on the failures it should see:
``swapped_entity`` is a factual error but a fluent one, ``scrambled_words`` is disfluent but
changes no fact. Every corruption is a pure function of (example, facts, rng), where ``facts``
are the intact rationale's fact sentences, and returns None when it does not apply to the row
(e.g. ``shuffled`` needs two sentences).
"""

import random
import re

from lmcot.data.example import Example
from lmcot.metrics import normalize_answer
from lmcot.rewards.text import STOPWORDS, mentions, split_sentences, strip_title

_NUMBER = re.compile(r"(?<![\d.,])\d{1,4}(?![\d.,]\d)")
# the first auxiliary ("was" -> "was not"), else a past-tense verb after the first word
_NEGATABLE = re.compile(
    r"\b(?P<aux>is|was|are|were|has|had|can|will)\b"
    r"|(?<=\w )(?P<verb>[a-z]+ed|became|went|wrote|won)\b"
)


def gold_rationale(example: Example) -> str:
    """Supporting sentences, then the conclusion.

    >>> ex = Example("1", "q?", [("A", ["Ann was born in Lyon.", "x."])], "Lyon",
    ...              supporting_facts=[("A", 0)])
    >>> gold_rationale(ex)
    'Ann was born in Lyon. So the answer is Lyon.'
    """
    return " ".join([*example.supporting_sentences(), f"So the answer is {example.answer}."])


def with_conclusion(example: Example, facts: list[str]) -> str:
    """``facts``, then "So the answer is <answer>.": an intact rationale of these facts."""
    return " ".join([*facts, f"So the answer is {example.answer}."])


def shuffled(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """All sentences (the conclusion included) in another order."""
    sentences = split_sentences(with_conclusion(example, facts))
    if len(sentences) < 2:
        return None
    order = list(range(len(sentences)))
    while order == sorted(order):
        rng.shuffle(order)
    return " ".join(sentences[i] for i in order)


def swapped_entity(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """One entity named in the facts replaced by another paragraph's entity: a fluent falsehood."""
    text = " ".join(facts)
    names = [strip_title(t) for t, _ in example.context]
    named = [n for n in dict.fromkeys(names) if mentions(text, n)]
    others = [n for n in dict.fromkeys(names) if not mentions(text, n) and n]
    if not named or not others:
        return None
    old, new = rng.choice(named), rng.choice(others)
    swapped = re.sub(rf"\b{re.escape(old)}\b", new, text, count=1)
    return None if swapped == text else with_conclusion(example, split_sentences(swapped))


def distractor(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """One supporting sentence replaced by a sentence of a paragraph that supports nothing."""
    facts = list(facts)
    gold_titles = {t for t, _ in example.supporting_facts}
    pool = [s.strip() for t, sents in example.context if t not in gold_titles for s in sents]
    pool = [s for s in pool if s]
    if not facts or not pool:
        return None
    facts[rng.randrange(len(facts))] = rng.choice(pool)
    return with_conclusion(example, facts)


def truncated(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """Cut mid-sentence at 40-70% of the words: the last hop and the conclusion are lost."""
    words = with_conclusion(example, facts).split()
    if len(words) < 6:
        return None
    cut = max(2, int(len(words) * rng.uniform(0.4, 0.7)))
    return " ".join(words[:cut]).rstrip(".,;:")


def wrong_answer(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """The conclusion states a wrong answer (yes/no flipped, else another entity or number)."""
    answer = normalize_answer(example.answer)
    if answer in ("yes", "no"):
        wrong = "no" if answer == "yes" else "yes"
    elif re.fullmatch(r"\d+", example.answer.strip()):
        wrong = str(int(example.answer) + rng.choice([-3, -2, -1, 1, 2, 3]))
    else:
        names = [strip_title(t) for t, _ in example.context]
        names = [n for n in dict.fromkeys(names) if n and normalize_answer(n) != answer]
        names = [n for n in names if not mentions(n, example.answer)]
        if not names:
            return None
        wrong = rng.choice(names)
    return " ".join([*facts, f"So the answer is {wrong}."])


def scrambled_words(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """Words of each fact shuffled (punctuation kept at the end): the facts' words, no grammar."""
    scrambled = []
    for fact in facts:
        words = fact.rstrip(".").split()
        rng.shuffle(words)
        scrambled.append(" ".join(words) + ".")
    return with_conclusion(example, scrambled) if scrambled else None


def telegraphic(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """Function words dropped ("Scott Derrickson American director"): terse, unnatural."""
    terse = [
        " ".join(w for w in fact.split() if w.lower().strip(",.") not in STOPWORDS)
        for fact in facts
    ]
    return with_conclusion(example, terse) if terse else None


def changed_number(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """One number in the facts changed (a year by 1-9, another number by 1-3): a fluent
    falsehood whose words, but for one, are all in the context."""
    spots = [(i, m) for i, fact in enumerate(facts) for m in _NUMBER.finditer(fact)]
    if not spots:
        return None
    i, m = rng.choice(spots)
    value = int(m[0])
    delta = rng.choice([-1, 1]) * rng.randint(1, 9 if len(m[0]) == 4 else 3)
    new = str(value + delta if value + delta >= 0 else value + abs(delta))
    changed = list(facts)
    changed[i] = facts[i][: m.start()] + new + facts[i][m.end() :]
    return with_conclusion(example, changed)


def negated(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """One fact negated ("was born" -> "was not born", "founded" -> "never founded"): the
    opposite claim with the same content words."""
    spots = [i for i, fact in enumerate(facts) if _NEGATABLE.search(fact)]
    if not spots:
        return None
    i = rng.choice(spots)
    changed = list(facts)
    changed[i] = _NEGATABLE.sub(
        lambda m: f"{m['aux']} not" if m["aux"] else f"never {m['verb']}", facts[i], count=1
    )
    return with_conclusion(example, changed)


def run_on(example: Example, facts: list[str], rng: random.Random) -> str | None:
    """Every sentence joined into one with ", and": same words, one long sentence."""
    sentences = split_sentences(with_conclusion(example, facts))
    if len(sentences) < 2:
        return None
    conclusion = sentences[-1][0].lower() + sentences[-1][1:]  # "so the answer is ..."
    return ", and ".join([*(s.rstrip(".") for s in sentences[:-1]), conclusion])


CORRUPTIONS = {
    f.__name__: f
    for f in (
        shuffled, swapped_entity, changed_number, negated, distractor, truncated,
        wrong_answer, scrambled_words, telegraphic, run_on,
    )
}  # fmt: skip

# the failures each aspect is about (docs/rewards.md gives the reasons)
ASPECT_CORRUPTIONS = {
    "factuality": ["swapped_entity", "changed_number", "negated"],
    "relevance": ["distractor"],
    "logicality": ["shuffled"],
    "consistency": ["wrong_answer", "truncated"],
    "coherence": ["shuffled", "distractor"],
    "fluency": ["scrambled_words", "truncated"],
    "naturalness": ["telegraphic", "scrambled_words"],
    "readability": ["run_on"],
    "task": ["wrong_answer", "swapped_entity", "distractor"],
}


def corrupt(
    example: Example, name: str, seed: int = 0, facts: list[str] | None = None
) -> str | None:
    """The ``name`` corruption of an intact rationale; None where it does not apply.

    ``facts`` are the intact rationale's fact sentences: the gold supporting sentences when None
    (the rationale :func:`gold_rationale` writes), or their paraphrase. Seeded by (seed, example
    id, corruption), so each pair is the same in every run.
    """
    rng = random.Random(f"{seed}:{example.id}:{name}")
    facts = example.supporting_sentences() if facts is None else list(facts)
    return CORRUPTIONS[name](example, facts, rng)
