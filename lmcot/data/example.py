"""The one example type that every data source produces and every stage consumes."""

from dataclasses import dataclass, field


@dataclass
class Example:
    """A multi-hop question with its paragraphs, gold answer and gold supporting facts.

    Args:
        id: unique within a dataset; every artifact (teacher JSONL, predictions) is keyed by it.
        question: the question text.
        context: ``[(title, [sentence, ...]), ...]`` paragraphs, gold and distractors, in order.
        answer: the gold answer.
        aliases: other accepted answers (2WikiMultiHopQA's ``id_aliases.json``); EM/F1 take the
            maximum over ``answer`` and these.
        supporting_facts: ``[(title, sentence_index), ...]`` gold supporting sentences.
        type: question type as the source names it (``bridge``, ``comparison``, ...).
    """

    id: str
    question: str
    context: list[tuple[str, list[str]]]
    answer: str
    aliases: list[str] = field(default_factory=list)
    supporting_facts: list[tuple[str, int]] = field(default_factory=list)
    type: str = ""

    @property
    def golds(self) -> list[str]:
        """The answer and its aliases, the list EM and F1 maximise over."""
        return [self.answer, *self.aliases]

    def supporting_sentences(self) -> list[str]:
        """Gold supporting sentences in the order of ``supporting_facts``, stripped.

        >>> ex = Example("1", "q?", [("A", ["a0.", " a1."])], "x", supporting_facts=[("A", 1)])
        >>> ex.supporting_sentences()
        ['a1.']
        """
        paragraphs = dict(self.context)
        return [paragraphs[title][i].strip() for title, i in self.supporting_facts]

    def context_text(self) -> str:
        """Paragraphs as prompt text: one ``Title: sentences`` line per paragraph.

        >>> Example("1", "q?", [("A", ["a0.", " a1."]), ("B", ["b0."])], "x").context_text()
        'A: a0. a1.\\nB: b0.'
        """
        return "\n".join(
            f"{title}: {' '.join(s.strip() for s in sentences)}"
            for title, sentences in self.context
        )
