"""The ways of answering a question that the paper compares, run on the same examples.

Every method takes the examples and the (cached) reader and returns one ``Prediction`` per
example; the evaluation stage scores and reports them side by side. Later stages add methods
that take a rationale from the small LM.
"""

from dataclasses import dataclass

from lmcot.data.example import Example
from lmcot.lm.base import LM
from lmcot.metrics import exact_match, f1
from lmcot.prompts import (
    FewShotPrompt,
    extract_answer,
    fit_prompts,
    split_rationale,
    token_counter,
)


@dataclass
class Prediction:
    """One method's answer to one example: a row of ``predictions.jsonl``."""

    id: str
    method: str
    rationale: str | None
    prediction: str
    gold: list[str]
    em: float
    f1: float

    @classmethod
    def scored(cls, example: Example, method: str, prediction: str, rationale: str | None = None):
        golds = example.golds
        return cls(
            example.id, method, rationale, prediction, golds, exact_match(prediction, golds),
            f1(prediction, golds),
        )  # fmt: skip


class StandardPrompting:
    """The large LM answers from question + context, with no rationale."""

    def __init__(self, prompt: FewShotPrompt):
        self.prompt = prompt

    def __call__(self, name: str, examples: list[Example], reader: LM) -> list[Prediction]:
        outputs = reader.generate([self.prompt.render(ex) for ex in examples], self.prompt.params)
        return [
            Prediction.scored(ex, name, extract_answer(out[0]))
            for ex, out in zip(examples, outputs)
        ]


class OriginalCoT:
    """The large LM writes its own rationale, then the answer (the paper's "original CoT").

    A reply that states no answer (chat readers often stop at a fact: "X was a professor at
    Columbia University.") gets a second turn, as zero-shot CoT does (Kojima et al., 2022): the
    reader is asked for the answer with its own rationale in context. All such questions go in
    one batched, cached call; ``second_turns`` says after each call how many needed it.

    Args:
        prompt: the CoT prompt.
        answer_prompt: the answer turn, with a ``{rationale}`` slot (``prompts.cot_answer``);
            None: no second turn, such a prediction stays empty.
    """

    def __init__(self, prompt: FewShotPrompt, answer_prompt: FewShotPrompt | None = None):
        self.prompt, self.answer_prompt = prompt, answer_prompt
        self.second_turns = 0

    def __call__(self, name: str, examples: list[Example], reader: LM) -> list[Prediction]:
        outputs = reader.generate([self.prompt.render(ex) for ex in examples], self.prompt.params)
        split = [split_rationale(out[0]) for out in outputs]
        unanswered = [i for i, (_, a) in enumerate(split) if not a] if self.answer_prompt else []
        if unanswered:
            turns = [self.answer_prompt.render(examples[i], split[i][0]) for i in unanswered]
            replies = reader.generate(turns, self.answer_prompt.params)
            for i, reply in zip(unanswered, replies):
                split[i] = (split[i][0], extract_answer(reply[0]))
        self.second_turns = len(unanswered)
        return [
            Prediction.scored(ex, name, answer, rationale)
            for ex, (rationale, answer) in zip(examples, split)
        ]


class LMGuided:
    """The small LM writes the rationale, the large LM answers with it (the paper's method).

    Args:
        student: the small LM (set by the evaluation stage from ``student_stage``).
        decoding: how rationales are drawn and turned into one answer (``lmcot.decoding``).
        rationale_prompt: the student's input, fitted to its token budget by the rule the
            student was trained with (:func:`lmcot.prompts.fit_prompt`).
        prompt: the reader's LM-guided answering prompt.
        student_stage: which stage's student writes: ``distill`` (KD) or ``refine`` (KD + RL).
        student_path: a student directory to use instead of that stage's export.
    """

    def __init__(
        self,
        decoding,
        rationale_prompt: FewShotPrompt,
        prompt: FewShotPrompt,
        student: LM | None = None,
        student_stage: str = "distill",
        student_path: str | None = None,
    ):
        self.student, self.decoding = student, decoding
        self.rationale_prompt, self.prompt = rationale_prompt, prompt
        self.student_stage, self.student_path = student_stage, student_path

    def __call__(self, name: str, examples: list[Example], reader: LM) -> list[Prediction]:
        def read(rationales: list[list[str]]) -> list[list[str]]:
            # all k rationales of all questions in one batched, cached reader call
            flat = [
                self.prompt.render(ex, rationale=r)
                for ex, rs in zip(examples, rationales)
                for r in rs
            ]
            outputs = iter(reader.generate(flat, self.prompt.params))
            return [[extract_answer(next(outputs)[0]) for _ in rs] for rs in rationales]

        prompts, _ = fit_prompts(self.rationale_prompt, examples, token_counter(self.student))
        chosen = self.decoding(
            examples,
            prompts,
            self.student,
            tuple(self.rationale_prompt.params.stop),
            read,
        )
        return [
            Prediction.scored(ex, name, answer, rationale.strip())
            for ex, (rationale, answer) in zip(examples, chosen)
        ]
