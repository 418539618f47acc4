"""Synthetic two-hop questions about invented entities: the offline default dataset.

Why synthetic: the default run must work offline, on a CPU, in minutes, with a 135M reader whose
prefill cost grows with context length (DESIGN.md §7). So contexts are short: 4 paragraphs of
1-2 sentences, on average about 115 SmolLM2 tokens (at most about 155). And every entity is
invented from syllables ("Bekrom Toys", "Lem Stikem", "Bripa"), so no model can answer from
pretraining and reading the context (or a rationale) is the only way.

What mirrors HotpotQA: paragraphs titled by their entity, gold paragraphs shuffled among
distractors, sentence-level ``supporting_facts``, and its two question types in eight kinds, each
with several surface templates:

- ``bridge`` (hop 1 names a bridge entity, the answer is a span of the other gold paragraph):
  the founder's birth city or birth year ("In which city was the founder of Bekrom Toys
  born?"); the home city of the company a person founded; the person born in the home city of a
  company ("Who was born in the city where Desem Brewing is based?").
- ``comparison``: which company was founded first / which person was born first (the answer is
  one of the two names), and "Were A and B born in the same city?" with ``yes`` and ``no`` as
  separate kinds, so they are balanced.

Why both hops are needed: the question names only the hop-1 entity; the paragraph that holds the
answer never names it (the link sentence sits in the other gold paragraph). Distractors are
paragraphs about other invented entities written from the same templates in the example's one
style (e.g. all company paragraphs name their city, or none do); for bridge questions they are
a parallel chain (another company with another founder born elsewhere), so "take the only birth
city in the context" does not work; they are ordered so that even one distractor competes with
the answer. Within an example all names differ and none contains another, and all years
differ, so an answer string appears exactly where the supporting facts say.

Determinism: example ``i`` depends only on ``(seed, i)``: its own ``random.Random`` and a kind
schedule that shuffles the eight kinds in each block of eight examples. So the same seed gives
the same list, ``num_examples`` and ``limit`` only cut it, and types stay balanced.
"""

import random
from dataclasses import dataclass, replace

from lmcot.data.example import Example
from lmcot.data.validate import check_options

KINDS = (
    "founder_city",
    "founder_year",
    "founded_hq",
    "native_of_hq",
    "founded_first",
    "born_first",
    "same_city_yes",
    "same_city_no",
)
BRIDGE = {"founder_city", "founder_year", "founded_hq", "native_of_hq"}
MAX_DISTRACTORS = 8  # as many as HotpotQA's distractor setting; also keeps years distinct
TRAIN_OFFSET = 10**6  # training examples come from indices far above any evaluation split
DEV_OFFSET = 2 * 10**6  # dev questions: the training distribution, for choosing settings

ONSETS = ("b", "d", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "br", "dr", "kr", "tr", "st")
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")
CODAS = ("", "", "n", "r", "l", "s", "k", "m")
CITY_ENDINGS = ("", "n", "sk", "via", "ra", "mar")  # syllables end in a vowel
# random syllables can spell real words; these would be bad names
BLOCKED = ("nig", "rap", "sex", "kil", "tit", "pis", "dik", "nas", "god", "dead")

ORG_KINDS = (
    ("record label", "Records"),
    ("film studio", "Films"),
    ("publishing house", "Press"),
    ("toy company", "Toys"),
    ("brewery", "Brewing"),
)
JOBS = (  # with their article
    "a painter",
    "an architect",
    "a chemist",
    "a poet",
    "a composer",
    "a sculptor",
    "an engineer",
    "a botanist",
)

QUESTIONS = {
    "founder_city": (
        "In which city was the founder of {org} born?",
        "Where was the person who founded {org} born?",
        "What is the birthplace of the founder of {org}?",
    ),
    "founder_year": (
        "In what year was the founder of {org} born?",
        "When was the person who founded {org} born?",
        "What is the birth year of the founder of {org}?",
    ),
    "founded_hq": (
        "In which city is the {kind} founded by {person} based?",
        "Where is the {kind} that {person} founded based?",
        "The {kind} founded by {person} is based in which city?",
    ),
    "native_of_hq": (
        "Who was born in the city where {org} is based?",
        "Which person was born in the home city of {org}?",
        "Who is a native of the city where {org} is based?",
    ),
    "founded_first": (
        "Which was founded first, {a} or {b}?",
        "Which is older, {a} or {b}?",
        "Was {a} or {b} founded earlier?",
    ),
    "born_first": (
        "Who was born first, {a} or {b}?",
        "Which person is older, {a} or {b}?",
        "Who was born earlier, {a} or {b}?",
    ),
    "same_city": (
        "Were {a} and {b} born in the same city?",
        "Were {a} and {b} born in the same place?",
        "Did {a} and {b} have the same birthplace?",
    ),
}


def load(
    num_examples: int = 200,
    seed: int = 0,
    limit: int | None = None,
    num_distractors: int = 2,
    split: str = "validation",
    num_train: int = 400,
) -> list[Example]:
    """Generate the synthetic dataset.

    Args:
        num_examples: how many evaluation examples to generate.
        seed: the same seed gives the identical list; example ``i`` depends only on (seed, i).
        limit: keep the first ``limit`` (None: all); same as a smaller ``num_examples``.
        num_distractors: distractor paragraphs per example, beside the 2 gold ones.
        split: ``validation`` (the evaluation questions); ``train`` draws ``num_train``
            examples from indices no evaluation split uses; ``dev`` draws ``num_examples``
            held-out training-distribution questions (neither training nor evaluation ones),
            on which prompts, suffixes and thresholds are chosen.
        num_train: size of the training split.

    Returns:
        Examples with ids ``syn-000000``, ... (``syn-train-000000``, ``syn-dev-000000``, ...).
    """
    check_options(limit, "raise")
    _check_count("num_examples", num_examples)
    _check_count("num_distractors", num_distractors, MAX_DISTRACTORS)
    if split == "train":
        examples = [
            make_example(TRAIN_OFFSET + i, seed, num_distractors) for i in range(num_train)
        ]
        return [replace(ex, id=f"syn-train-{i:06d}") for i, ex in enumerate(examples)]
    n = num_examples if limit is None else min(num_examples, limit)
    if split == "dev":
        examples = [make_example(DEV_OFFSET + i, seed, num_distractors) for i in range(n)]
        return [replace(ex, id=f"syn-dev-{i:06d}") for i, ex in enumerate(examples)]
    if split != "validation":
        raise ValueError(f"data.split of the synthetic data must be validation|train|dev: {split}")
    return [make_example(i, seed, num_distractors) for i in range(n)]


def make_example(index: int, seed: int = 0, num_distractors: int = 2) -> Example:
    """Example ``index`` of the dataset with this seed.

    >>> ex = make_example(1, seed=0)
    >>> ex.id, ex.type, ex.question, ex.answer
    ('syn-000001', 'bridge', 'In which city was the founder of Bekrom Toys born?', 'Bripa')
    >>> for sentence in ex.supporting_sentences():
    ...     print(sentence)
    Bekrom Toys is a toy company founded by Lem Stikem in 1962.
    Lem Stikem was born in Bripa in 1939.
    >>> make_example(1, seed=0) == ex
    True
    """
    _check_count("num_distractors", num_distractors, MAX_DISTRACTORS)
    block = random.Random(f"lmcot.synthetic:{seed}:block:{index // len(KINDS)}")
    kinds = list(KINDS)
    block.shuffle(kinds)
    kind = kinds[index % len(KINDS)]
    rng = random.Random(f"lmcot.synthetic:{seed}:example:{index}")
    world = _World(rng)
    question, answer, gold, facts, distractor = _BUILDERS[kind](world)
    # fresh units from the same builder until there are enough distractor paragraphs
    distractors: list[tuple[str, list[str]]] = []
    while len(distractors) < num_distractors:
        distractors += distractor()
    context = gold + distractors[:num_distractors]
    rng.shuffle(context)
    return Example(
        id=f"syn-{index:06d}",
        question=question,
        context=context,
        answer=answer,
        supporting_facts=facts,
        type="bridge" if kind in BRIDGE else "comparison",
    )


def _check_count(name: str, value: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if high is not None and value > high:
        raise ValueError(
            f"{name} must be at most {high} (contexts are meant to be short), got {value}"
        )


@dataclass
class _Person:
    name: str
    city: str
    year: int
    job: str

    @property
    def last(self) -> str:
        return self.name.split()[-1]


@dataclass
class _Org:
    name: str
    kind: str
    year: int
    city: str
    founder: _Person | None = None


class _World:
    """Invents the entities of one example and writes their paragraphs."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.words: set[str] = set()  # lower-cased words of every name so far
        self.years: set[int] = set()
        # one style per example, so that distractors are written like the gold paragraphs
        self.with_city = rng.random() < 0.5  # founder questions: the company's city as a lure
        self.with_founder = rng.random() < 0.5  # founded-first questions: name the founders
        self.kind = rng.choice(ORG_KINDS)[0]

    def _syllables(self, n: int) -> str:
        return "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(n))

    def _fresh(self, make) -> str:
        # no word of a name inside another name's word ("Ress" vs "Tasik Press"): an answer
        # string must occur only where the supporting facts say; shared suffixes are fine
        for _ in range(10_000):
            name = make()
            words = name.lower().split()
            # an organisation's suffix ("Press") is fixed by its kind, so it is never the word
            # that clashes: checking it could loop forever after a name like "Res"
            clash = any(w in e or e in w for w in words if w not in _SUFFIXES for e in self.words)
            if not clash and not any(b in w for b in BLOCKED for w in words):
                self.words.update(words)
                return name
        raise RuntimeError(f"no fresh name after 10,000 draws; names so far: {sorted(self.words)}")

    def year(self, low: int, high: int) -> int:
        while (y := self.rng.randint(low, high)) in self.years:
            pass
        self.years.add(y)
        return y

    def city(self) -> str:
        return self._fresh(
            lambda: (self._syllables(2) + self.rng.choice(CITY_ENDINGS)).capitalize()
        )

    def person(self, city: str | None = None) -> _Person:
        rng = self.rng

        def make() -> str:
            # a one-syllable first name gets a final consonant ("Bon", not "Bo")
            n = 1 if rng.random() < 0.4 else 2
            first = self._syllables(n).capitalize() + rng.choice(CODAS[2:] if n == 1 else CODAS)
            return f"{first} {self._syllables(2).capitalize()}{rng.choice(CODAS[2:])}"

        name = self._fresh(make)
        return _Person(name, city or self.city(), self.year(1850, 1965), rng.choice(JOBS))

    def org(self, founder: _Person | None = None, kind: str | None = None) -> _Org:
        kind = kind or self.rng.choice(ORG_KINDS)[0]
        suffix = dict(ORG_KINDS)[kind]
        name = self._fresh(
            lambda: f"{self._syllables(2).capitalize()}{self.rng.choice(CODAS)} {suffix}"
        )
        # founded 22-55 years after the founder's birth; any plausible year without one
        low, high = (founder.year + 22, founder.year + 55) if founder else (1880, 2015)
        return _Org(name, kind, self.year(low, high), self.city(), founder)

    # A paragraph is (title, sentences); the dict gives the index of each fact's sentence.

    def person_paragraph(self, p: _Person, founded: _Org | None = None) -> tuple:
        births = (
            (f"{p.name} was born in {p.city} in {p.year}.", f"{p.last} works as {p.job}."),
            (f"{p.name} (born {p.year} in {p.city}) is {p.job}.",),
            (f"Born in {p.city} in {p.year}, {p.name} became {p.job}.",),
        )
        # at most 2 sentences: with a link to write, only the one-sentence birth templates
        sentences = list(self.rng.choice(births if founded is None else births[1:]))
        if founded is not None:
            links = (
                f"In {founded.year}, {p.last} founded {founded.name}.",
                f"{p.last} later founded {founded.name}.",
                f"{p.last} is the founder of {founded.name}.",
            )
            sentences.append(self.rng.choice(links))
        return (p.name, sentences), {"birth": 0, "link": len(sentences) - 1}

    def org_paragraph(self, o: _Org, with_founder: bool, with_city: bool) -> tuple:
        if with_founder:
            mains = (
                f"{o.name} is a {o.kind} founded by {o.founder.name} in {o.year}.",
                f"{o.name} was founded in {o.year} by {o.founder.name}.",
                f"{o.name}, a {o.kind}, was started by {o.founder.name} in {o.year}.",
            )
        else:
            mains = (
                f"{o.name} is a {o.kind} founded in {o.year}.",
                f"{o.name} was founded as a {o.kind} in {o.year}.",
                f"{o.name}, a {o.kind}, was established in {o.year}.",
            )
        sentences = [self.rng.choice(mains)]
        if with_city:
            cities = (
                f"It is based in {o.city}.",
                f"Its headquarters are in {o.city}.",
                f"The company is based in {o.city}.",
            )
            sentences.append(self.rng.choice(cities))
        return (o.name, sentences), {"main": 0, "city": len(sentences) - 1}

    def ask(self, question_kind: str, **names: str) -> str:
        return self.rng.choice(QUESTIONS[question_kind]).format(**names)


_SUFFIXES = {suffix.lower() for _, suffix in ORG_KINDS}

# A chain writes one world fact path: (question, answer, [hop-1, hop-2 paragraph], facts). The
# answer sits in hop 2, which never names the question's entity. A distractor for a bridge
# question is a parallel chain, hop 2 first, so that even one distractor competes with the answer.


def _founder_chain(world: _World, ask_year: bool) -> tuple:
    person = world.person()
    org = world.org(founder=person)
    org_par, org_at = world.org_paragraph(org, with_founder=True, with_city=world.with_city)
    person_par, person_at = world.person_paragraph(person)
    question = world.ask("founder_year" if ask_year else "founder_city", org=org.name)
    answer = str(person.year) if ask_year else person.city
    facts = [(org.name, org_at["main"]), (person.name, person_at["birth"])]
    return question, answer, [org_par, person_par], facts


def _founded_hq_chain(world: _World) -> tuple:
    person = world.person()
    org = world.org(founder=person, kind=world.kind)  # one kind: the question names it
    person_par, person_at = world.person_paragraph(person, founded=org)
    org_par, org_at = world.org_paragraph(org, with_founder=False, with_city=True)
    question = world.ask("founded_hq", kind=org.kind, person=person.name)
    facts = [(person.name, person_at["link"]), (org.name, org_at["city"])]
    return question, org.city, [person_par, org_par], facts


def _native_of_hq_chain(world: _World) -> tuple:
    org = world.org()
    person = world.person(city=org.city)
    org_par, org_at = world.org_paragraph(org, with_founder=False, with_city=True)
    person_par, person_at = world.person_paragraph(person)
    question = world.ask("native_of_hq", org=org.name)
    facts = [(org.name, org_at["city"]), (person.name, person_at["birth"])]
    return question, person.name, [org_par, person_par], facts


def _bridge(chain) -> tuple:
    question, answer, gold, facts = chain()
    return question, answer, gold, facts, lambda: chain()[2][::-1]


# A unit is one entity of a comparison: (entity, paragraph, supporting fact).


def _org_unit(world: _World) -> tuple:
    org = world.org(founder=world.person() if world.with_founder else None)
    paragraph, at = world.org_paragraph(org, world.with_founder, with_city=False)
    return org, paragraph, (org.name, at["main"])


def _person_unit(world: _World, city: str | None = None) -> tuple:
    person = world.person(city)
    paragraph, at = world.person_paragraph(person)
    return person, paragraph, (person.name, at["birth"])


def _compare(world: _World, question_kind: str, unit, same: bool | None = None) -> tuple:
    x, x_par, x_fact = unit()
    y, y_par, y_fact = unit(x.city) if same else unit()
    question = world.ask(question_kind, a=x.name, b=y.name)
    if same is None:  # earlier founded / born; years are random, so x and y win equally often
        answer = (x if x.year < y.year else y).name
    else:
        answer = "yes" if x.city == y.city else "no"
    return question, answer, [x_par, y_par], [x_fact, y_fact], lambda: [unit()[1]]


_BUILDERS = {
    "founder_city": lambda w: _bridge(lambda: _founder_chain(w, ask_year=False)),
    "founder_year": lambda w: _bridge(lambda: _founder_chain(w, ask_year=True)),
    "founded_hq": lambda w: _bridge(lambda: _founded_hq_chain(w)),
    "native_of_hq": lambda w: _bridge(lambda: _native_of_hq_chain(w)),
    "founded_first": lambda w: _compare(w, "founded_first", lambda: _org_unit(w)),
    "born_first": lambda w: _compare(w, "born_first", lambda: _person_unit(w)),
    "same_city_yes": lambda w: _compare(w, "same_city", lambda c=None: _person_unit(w, c), True),
    "same_city_no": lambda w: _compare(w, "same_city", lambda c=None: _person_unit(w, c), False),
}
