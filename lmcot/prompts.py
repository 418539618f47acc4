"""Few-shot prompt templates (defined in ``conf/prompts/``), fitting, and answer extraction.

Small readers fail EM mostly on answer *format* (whole sentences that restate the question), so
every prompt ends in a fixed ``Answer:`` slot after few-shot exemplars, generation stops at the
end of that line, and one tested function extracts the answer from whatever came back.

A prompt with a token budget (the student's) is fitted by one rule at training and at
inference (:func:`fit_prompt`): whole context paragraphs are dropped, never the instruction, the
exemplars, the question or the open slot, so the student never trains on a prompt that it is
not shown at test time.
"""

import dataclasses
import functools
import logging
import math
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from lmcot.data.example import Example
from lmcot.lm.base import GenerationParams
from lmcot.lm.messages import FewShotText
from lmcot.metrics import normalize_answer

log = logging.getLogger(__name__)


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
        max_prompt_tokens: token budget of the rendered prompt, met by :func:`fit_prompt`;
            None: no budget, render in full.
    """

    version: str
    instruction: str
    template: str
    target: str
    exemplars: list[dict] = field(default_factory=list)
    generation: dict = field(default_factory=dict)
    max_prompt_tokens: int | None = None

    def render(self, example: Example, rationale: str | None = None) -> FewShotText:
        """The full prompt for ``example`` (and, for LM-guided answering, a given rationale):
        its flat text, which also knows its parts for chat models (``lmcot.lm.messages``).

        The rationale is stripped, as the exemplars show theirs and as predictions store it: a
        student's decoded text starts with a space, and the reader answering it unstripped for
        EM and stripped for the ``task`` aspect read every rationale twice, and answered some
        differently (EM and the task aspect differed by a question in 150)."""
        shots = [(self.template.format(**ex), self.target.format(**ex)) for ex in self.exemplars]
        query = self.template.format(context=example.context_text(), question=example.question,
                                     rationale=(rationale or "").strip())  # fmt: skip
        return FewShotText(self.instruction, shots, query)

    @property
    def params(self) -> GenerationParams:
        return GenerationParams(**self.generation)


TokenCounter = Callable[[str], int]


class PromptTooLong(ValueError):
    """A prompt exceeds its budget even with every droppable paragraph dropped."""


def approximate_tokens(text: str) -> int:
    """Tokens of ``text`` for a model whose tokenizer we do not hold (an API student).

    Four characters per token, rounded up: OpenAI's rule of thumb for English BPE vocabularies.
    It errs both ways by ~20%, so a budget met this way is approximate.

    >>> approximate_tokens("Question: who?")
    4
    """
    return -(-len(text) // 4)


def token_counter(lm) -> TokenCounter:
    """How prompts are counted for ``lm``: a local model's own tokenizer, special tokens
    included (as training tokenises sources), else :func:`approximate_tokens` (API models).

    Only the tokenizer is loaded, so a fully cached evaluation still never loads the model.
    """
    path = getattr(lm, "tokenizer_path", None)
    if path is None:
        return approximate_tokens
    tokenizer = _tokenizer(path, getattr(lm, "trust_remote_code", False))
    return lambda text: len(tokenizer(text)["input_ids"])


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def drop_order(example: Example, keep: Collection[str] = ()) -> list[int]:
    """Indices of the context paragraphs in the order fitting drops them, least related first.

    At test time no gold is known, so paragraphs are ranked by how they relate to the question:
    first by the question words in the paragraph's title (a multi-hop question names its
    bridge or compared entities, whose paragraphs carry those titles), then by the question
    words in the whole paragraph, each weighted by its rarity among this example's paragraphs
    (``log((N + 1) / (1 + paragraphs containing it))``, so words every paragraph has, function
    words included, count for nothing). Ties drop later paragraphs first. Paragraphs titled in
    ``keep`` (the gold ones, at training) never drop. On the 33 HotpotQA dev rows of the
    project's sample, with the student prompt cut to 384 SmolLM2 tokens, this kept 62% of the
    gold paragraphs (both gold in 11 rows); plain word overlap kept 30%, dropping from the end
    15% (HotpotQA shuffles gold paragraphs among the distractors).

    >>> ex = Example("1", "Where was Ann Lee born?", [("Ann Lee", ["She was born in Rye."]),
    ...     ("Bob", ["Bob was born in Lee."]), ("Cy", ["Cy sang."])], "Rye")
    >>> drop_order(ex), drop_order(ex, keep={"Cy"})
    ([2, 1, 0], [1, 0])
    """
    question = set(normalize_answer(example.question).split())
    words = [
        set(normalize_answer(f"{title} {' '.join(sentences)}").split())
        for title, sentences in example.context
    ]
    n = len(words)

    def relatedness(i: int) -> tuple[int, float]:
        in_title = question & set(normalize_answer(example.context[i][0]).split())
        shared = question & words[i]
        rarity = sum(math.log((n + 1) / (1 + sum(w in other for other in words))) for w in shared)
        return len(in_title), rarity

    droppable = [i for i, (title, _) in enumerate(example.context) if title not in keep]
    return sorted(droppable, key=lambda i: (*relatedness(i), -i))


def fit_prompt(
    prompt: FewShotPrompt,
    example: Example,
    count_tokens: TokenCounter,
    keep: Collection[str] = (),
) -> tuple[str, int]:
    """``prompt.render(example)`` within ``prompt.max_prompt_tokens``, and how many context
    paragraphs it dropped (in :func:`drop_order`; the others keep their order).

    Raises :class:`PromptTooLong` when even dropping every paragraph not in ``keep`` is not
    enough.
    """
    budget = prompt.max_prompt_tokens
    if budget is None:
        return prompt.render(example), 0
    order = drop_order(example, keep)
    for n in range(len(order) + 1):
        dropped = set(order[:n])
        context = [p for i, p in enumerate(example.context) if i not in dropped]
        text = prompt.render(dataclasses.replace(example, context=context))
        if count_tokens(text) <= budget:
            return text, n
    raise PromptTooLong(
        f"example {example.id}: the prompt is {count_tokens(text)} tokens with only its "
        f"{len(context)} kept paragraph(s) left, over max_prompt_tokens={budget}"
    )


def fit_prompts(
    prompt: FewShotPrompt, examples: list[Example], count_tokens: TokenCounter
) -> tuple[list[str], int]:
    """Fitted prompts of ``examples`` at inference (no paragraph is known to be gold), and how
    many of them were cut."""
    fitted = [fit_prompt(prompt, ex, count_tokens) for ex in examples]
    cut = sum(dropped > 0 for _, dropped in fitted)
    if cut:
        log.info(
            "dropped context paragraphs from %d of %d prompts to fit max_prompt_tokens=%d",
            cut, len(examples), prompt.max_prompt_tokens,
        )  # fmt: skip
    return [text for text, _ in fitted], cut


_ANSWER_LABEL = re.compile(r"(?:^|\n)\s*answer\s*:", re.IGNORECASE)
# "the answer is[:] X", "answer: X" anywhere in a line
_ANSWER_IS = re.compile(r"\banswer(?:\s+is\s*:?|\s*:)\s*(?P<answer>[^\n]*)", re.IGNORECASE)
# "Therefore, X" / "So X" / "Thus X" / "Hence X" opening a sentence
_CONNECTIVE = re.compile(
    r"(?:^|(?<=[.!?])\s+|\n)\s*(?:therefore|so|thus|hence)\b,?\s+(?P<answer>[^\n]*)",
    re.IGNORECASE,
)
# a reply that opens with a bare "Yes," / "No." (chat models answer yes/no questions so)
_YES_NO = re.compile(r"^\W*(?P<answer>yes|no)\b\s*(?:[,.!;:]|$)", re.IGNORECASE)
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
    "So", "Thus" or "Hence"; failing that, "yes" or "no" if the text opens with a bare
    "Yes," / "No." X runs to the end of its sentence.

    >>> stated_answer("Lee was born in 1950. The answer is: **Columbia University**.")
    'Columbia University'
    >>> stated_answer("It was 7 then. So the answer is 10. Other text.")
    '10'
    >>> stated_answer("Both bands are from Ohio. Therefore, Orrin Vale.")
    'Orrin Vale'
    >>> stated_answer("He served in the U.S. Navy. So U.S. Navy")
    'U.S. Navy'
    >>> stated_answer("No, Scott Derrickson and Ed Wood were not of the same nationality.")
    'no'
    >>> stated_answer("**Yes.** Both were born in Ohio.")
    'yes'
    >>> stated_answer("Nobody knows.") is None
    True
    >>> stated_answer("Arlo was born in Lyon.") is None
    True
    """
    for pattern in (_ANSWER_IS, _CONNECTIVE) if connectives else (_ANSWER_IS,):
        matches = list(pattern.finditer(text))
        if matches:
            sentence = _SENTENCE_END.split(matches[-1]["answer"], maxsplit=1)[0]
            if answer := clean_answer(sentence):
                return answer
    if match := _YES_NO.match(text):
        return match["answer"].lower()
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
    >>> extract_answer("Answer: No, they were born in different countries.")
    'no'
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
