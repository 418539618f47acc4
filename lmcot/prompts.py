"""Few-shot prompt templates (defined in ``conf/prompts/``) and answer extraction.

Small readers fail EM mostly on answer *format* (whole sentences that restate the question), so
every prompt ends in a fixed ``Answer:`` slot after few-shot exemplars, generation stops at the
end of that line, and one tested function extracts the answer from whatever came back.
"""

import re
from dataclasses import dataclass, field

from lmcot.data.example import Example
from lmcot.lm.base import GenerationParams
from lmcot.lm.messages import FewShotText


@dataclass
class FewShotPrompt:
    """A prompt: instruction, rendered exemplars, then the query with an open slot.

    Args:
        version: recorded with every artifact the prompt produced (results, teacher JSONL).
        instruction: first paragraph of the prompt.
        template: ``str.format`` pattern with ``{context}``, ``{question}`` and, for prompts
            that take a rationale, ``{rationale}``; it ends where the model should continue.
        target: what follows ``template`` in an exemplar (``{answer}``, ``{rationale}``).
        exemplars: dicts with ``context``, ``question``, ``rationale`` and ``answer``.
        generation: decoding parameters for this prompt (its stop strings belong to its format).
    """

    version: str
    instruction: str
    template: str
    target: str
    exemplars: list[dict] = field(default_factory=list)
    generation: dict = field(default_factory=dict)

    def render(self, example: Example, rationale: str | None = None) -> FewShotText:
        """The full prompt for ``example`` (and, for LM-guided answering, a given rationale):
        its flat text, which also knows its parts for chat models (``lmcot.lm.messages``)."""
        shots = [(self.template.format(**ex), self.target.format(**ex)) for ex in self.exemplars]
        query = self.template.format(
            context=example.context_text(), question=example.question, rationale=rationale or ""
        )
        return FewShotText(self.instruction, shots, query)

    @property
    def params(self) -> GenerationParams:
        return GenerationParams(**self.generation)


_ANSWER_LABEL = re.compile(r"(?:^|\n)\s*answer\s*:", re.IGNORECASE)
# "the answer is[:] X", "answer: X" anywhere in a line
_ANSWER_IS = re.compile(r"\banswer(?:\s+is\s*:?|\s*:)\s*(?P<answer>[^\n]*)", re.IGNORECASE)
# "Therefore, X" / "So X" / "Thus X" / "Hence X" opening a sentence
_CONNECTIVE = re.compile(
    r"(?:^|(?<=[.!?])\s+|\n)\s*(?:therefore|so|thus|hence)\b,?\s+(?P<answer>[^\n]*)",
    re.IGNORECASE,
)
# a sentence ends at . ! ? before a capital, except after an initial ("U.S. Navy", "J. Smith")
_SENTENCE_END = re.compile(r"(?<!\b[A-Z])[.!?]\s+(?=[A-Z0-9])")
_WRAPPING = "\"'`*_ \t\u201c\u201d\u2018\u2019"  # quotes, markdown bold/italics, spaces
_TRAILING = ".,;:!"


def clean_answer(text: str) -> str:
    """An answer phrase without surrounding quotes, markdown emphasis or trailing punctuation.

    >>> clean_answer(' **"Columbia University".** ')
    'Columbia University'
    >>> clean_answer("U.S.")
    'U.S'
    """
    previous = None
    while text != previous:
        previous, text = text, text.strip(_WRAPPING).rstrip(_TRAILING)
    return text


def stated_answer(text: str, connectives: bool = True) -> str | None:
    """The answer ``text`` states last, or None: the last "the answer is[:] X" (or "answer: X")
    statement; failing that, with ``connectives``, the last sentence opened by "Therefore,",
    "So", "Thus" or "Hence". X runs to the end of its sentence.

    >>> stated_answer("Lee was born in 1950. The answer is: **Columbia University**.")
    'Columbia University'
    >>> stated_answer("It was 7 then. So the answer is 10. Other text.")
    '10'
    >>> stated_answer("Both bands are from Ohio. Therefore, Orrin Vale.")
    'Orrin Vale'
    >>> stated_answer("He served in the U.S. Navy. So U.S. Navy")
    'U.S. Navy'
    >>> stated_answer("Arlo was born in Lyon.") is None
    True
    """
    for pattern in (_ANSWER_IS, _CONNECTIVE) if connectives else (_ANSWER_IS,):
        matches = list(pattern.finditer(text))
        if matches:
            sentence = _SENTENCE_END.split(matches[-1]["answer"], maxsplit=1)[0]
            if answer := clean_answer(sentence):
                return answer
    return None


def extract_answer(text: str) -> str:
    """The short answer in a model's output, never dropping one it states.

    Rules, in order: the first line after the last ``Answer:`` label (a "the answer is"
    inside it dropped); else the last stated answer (:func:`stated_answer`); else the first
    line. Quotes, markdown emphasis and trailing punctuation are stripped.

    >>> extract_answer(" Paris.\\nQuestion: What else?")
    'Paris'
    >>> extract_answer("Both were born in Lyon.\\nAnswer: yes")
    'yes'
    >>> extract_answer('The answer is "Tessik Films".')
    'Tessik Films'
    >>> extract_answer("Answer: The answer is **Lee Hazlewood**")
    'Lee Hazlewood'
    >>> extract_answer("Kansas is in the US. So the answer is 10.")
    '10'
    >>> extract_answer("Both bands formed in Ohio. Therefore, Orrin Vale.")
    'Orrin Vale'
    """
    parts = _ANSWER_LABEL.split(text)
    if len(parts) > 1:
        slot = parts[-1].strip().split("\n", 1)[0]
        return stated_answer(slot, connectives=False) or clean_answer(slot)
    return stated_answer(text) or clean_answer(text.strip().split("\n", 1)[0])


def split_rationale(text: str) -> tuple[str, str]:
    """Split a chain-of-thought output into (rationale, answer); without an ``Answer:`` line
    the answer is the one the rationale states, if any (:func:`stated_answer`).

    >>> split_rationale(" Arlo was born in Lyon.\\nAnswer: Lyon")
    ('Arlo was born in Lyon.', 'Lyon')
    >>> split_rationale("Lyon is in France. The answer is: Lyon.")
    ('Lyon is in France. The answer is: Lyon.', 'Lyon')
    >>> split_rationale("Arlo was born in Lyon.")
    ('Arlo was born in Lyon.', '')
    """
    parts = _ANSWER_LABEL.split(text, maxsplit=1)
    if len(parts) > 1:
        return parts[0].strip(), extract_answer(text)
    return text.strip(), stated_answer(text) or ""
