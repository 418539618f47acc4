"""Templated rewordings of supporting sentences: intact rationales that are not verbatim copies.

Validating scorers only with verbatim context sentences flatters every scorer that measures
overlap with the context (a copy scores 1.0). Real rationales paraphrase, so the validation also
judges each scorer on facts reworded by rules that keep every fact:

- clause reordering, one structural rule per sentence (the first that matches):
  "X (born D) is Y." -> "Born D, X is Y."; "Born in C in Y, X became Z." -> "X, born in C in Y,
  became Z."; "X was born in C." -> "C is where X was born."; "X was founded by Y in 1962." ->
  "Y founded X in 1962."; "X is a K founded by Y." -> "Y founded X, a K."; "X is the founder
  of Y." -> "Y was founded by X."; "In 1962, X did Y." -> "X did Y in 1962.";
- then every synonym of ``SYNONYMS`` (whole words, lower case only, so names are never touched).

Hand-written rules, not a paraphrase model: nothing can be downloaded offline, a small LM would
change facts as often as wording, and a rule's output is checkable by eye. Sentences no rule
matches stay verbatim; :func:`paraphrase_facts` says whether anything changed.
"""

import re

from lmcot.data.example import Example

# reworded phrase -> replacement; each keeps the fact (tested for word-level identity elsewhere)
SYNONYMS = {
    "film": "movie",
    "films": "movies",
    "song": "track",
    "author": "writer",
    "located in": "situated in",
    "began": "started",
    "largest": "biggest",
    "best known": "most famous",
    "known as": "called",
    "is based in": "is headquartered in",
    "headquarters are in": "head office is in",
    "works as": "is employed as",
    "served as": "worked as",
    "became": "went on to become",
    "later founded": "went on to found",
    "established": "set up",
    "approximately": "about",
    "originally": "first",
    "starring": "featuring",
}
_PARTICIPLES = {
    "founded": "founded", "started": "started", "established": "established",
    "directed": "directed", "written": "wrote", "produced": "produced", "created": "created",
    "developed": "developed", "published": "published", "designed": "designed",
    "built": "built", "composed": "composed", "formed": "formed",
}  # fmt: skip
_VERB = "|".join(_PARTICIPLES)
_YEAR_TAIL = r"(?P<tail>(?: in \d{4})?)"
_AGENT = r"(?P<agent>(?:(?! by )[^,])+?)"  # one agent: "A and sung by B" is left alone
_NOUN = r"(?!(?:It|He|She|They|This|These)\b)"  # a pronoun cannot become an object


def _active(m: re.Match) -> str:
    # "Y founded X, a K, in 1962.": an apposition keeps its closing comma before the year
    thing = f"{m['thing']}, {m['kind']}" if m.groupdict().get("kind") else m["thing"]
    comma = "," if "," in thing and m["tail"] else ""
    return f"{m['agent']} {_PARTICIPLES[m['verb']]} {thing}{comma}{m['tail']}."


# (pattern on the whole sentence, replacement): the first match is applied, at most one
_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"^(?P<x>[^()]+?) \(born (?P<born>[^()]+)\) (?P<rest>.+)$"),
     r"Born \g<born>, \g<x> \g<rest>"),
    (re.compile(r"^Born (?P<born>[^,]+), (?P<x>[^,]+?) (?P<rest>(?:became|is|was) .+)$"),
     r"\g<x>, born \g<born>, \g<rest>"),
    (re.compile(r"^(?P<x>[^,]+?) was born in (?P<place>[^,]+?)(?P<year>(?: in \d{4})?)\.$"),
     lambda m: f"{m['place']} is where {m['x']} was born{m['year'] and ',' + m['year']}."),
    (re.compile(rf"^{_NOUN}(?P<thing>[^,]+?) is (?P<kind>an? [^,]+?) (?P<verb>{_VERB}) by "
                rf"{_AGENT}{_YEAR_TAIL}\.$"), _active),
    (re.compile(rf"^{_NOUN}(?P<thing>.+?),? (?:was|were) (?P<verb>{_VERB}) by "
                rf"{_AGENT}{_YEAR_TAIL}\.$"), _active),
    (re.compile(rf"^{_NOUN}(?P<thing>.+?),? (?:was|were) (?P<verb>{_VERB})"
                rf"(?P<tail> in \d{{4}}) by {_AGENT}\.$"), _active),
    (re.compile(r"^(?P<x>.+?) is the founder of (?P<y>.+?)\.$"), r"\g<y> was founded by \g<x>."),
    (re.compile(r"^In (?P<year>\d{4}), (?P<rest>.+?)\.$"), r"\g<rest> in \g<year>."),
]  # fmt: skip
_SYNONYM = re.compile(r"\b(" + "|".join(sorted(map(re.escape, SYNONYMS), key=len)[::-1]) + r")\b")


def paraphrase(sentence: str) -> str:
    """One structural rewording (if a rule matches) and every synonym swap.

    >>> paraphrase("Lem Stikem was born in Bripa in 1939.")
    'Bripa is where Lem Stikem was born, in 1939.'
    >>> paraphrase("Bekrom Toys is a toy company founded by Lem Stikem in 1962.")
    'Lem Stikem founded Bekrom Toys, a toy company, in 1962.'
    >>> paraphrase("Scott Derrickson (born July 16, 1966) is an American film director.")
    'Born July 16, 1966, Scott Derrickson is an American movie director.'
    """
    text = sentence.strip()
    for pattern, replacement in _RULES:
        new = pattern.sub(replacement, text, count=1)
        if new != text:
            text = new[0].upper() + new[1:]
            break
    return _SYNONYM.sub(lambda m: SYNONYMS[m[1]], text)


def paraphrase_facts(example: Example) -> tuple[list[str], bool]:
    """The example's supporting sentences reworded, and whether any of them changed."""
    facts = example.supporting_sentences()
    reworded = [paraphrase(f) for f in facts]
    return reworded, reworded != [f.strip() for f in facts]
