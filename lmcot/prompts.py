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
_ANSWER_IS = re.compile(r"^(?:so |therefore |thus )?(?:the )?answer is\s*:?\s*", re.IGNORECASE)


def extract_answer(text: str) -> str:
    """The short answer in a model's output: after the last ``Answer:``, its first line.

    >>> extract_answer(" Paris.\\nQuestion: What else?")
    'Paris'
    >>> extract_answer("Both were born in Lyon.\\nAnswer: yes")
    'yes'
    >>> extract_answer('The answer is "Tessik Films".')
    'Tessik Films'
    """
    parts = _ANSWER_LABEL.split(text)
    answer = parts[-1].strip().split("\n", 1)[0].strip()
    answer = _ANSWER_IS.sub("", answer)
    return answer.strip().rstrip(".").strip().strip("\"'").strip()


def split_rationale(text: str) -> tuple[str, str]:
    """Split a chain-of-thought output into (rationale, answer).

    >>> split_rationale(" Arlo was born in Lyon.\\nAnswer: Lyon")
    ('Arlo was born in Lyon.', 'Lyon')
    """
    parts = _ANSWER_LABEL.split(text, maxsplit=1)
    return parts[0].strip(), extract_answer(text) if len(parts) > 1 else ""
