"""The paper-style judge: an LM answers a yes/no question about one aspect of a rationale.

The judge prompt (instruction, per-aspect criterion and few-shot exemplars) lives in
``conf/reward/judge/*.yaml``. The score is the judge's probability of " yes" against " no":

.. math:: s = \\frac{P(\\text{yes})}{P(\\text{yes}) + P(\\text{no})}
          = \\sigma\\big(\\log P(\\text{yes}) - \\log P(\\text{no})\\big)

from ``LM.logprobs`` (two cached scoring calls). Backends without log-probabilities (chat-only
APIs) raise ``UnsupportedByBackend``; the judge then samples ``fallback_samples`` short answers
at temperature 1 and scores the frequency of yes among the yes/no answers.

Prompt length is the cost (a 135M judge on 2 CPU cores needs about 1 s per 500 tokens), so the
judge sees the question, the rationale and, for aspects about the context (``evidence: true``),
only a few evidence sentences instead of the ~1,500-token HotpotQA context:

- ``evidence=retrieved`` (default, gold-free): the context sentences sharing most content words
  with the question and rationale. A rationale's claims, true or false, retrieve the sentences
  they should be checked against; a distractor claim retrieves its own paragraph.
- ``evidence=supporting``: the gold supporting sentences (reads gold annotations).
"""

import math
import re

from lmcot.data.example import Example
from lmcot.lm.base import LM, GenerationParams, UnsupportedByBackend
from lmcot.rewards.base import register, require_examples
from lmcot.rewards.text import retrieve


def yes_probability(logp_yes: float, logp_no: float) -> float | None:
    """P(yes) / (P(yes) + P(no)) from two log-probabilities; None if both are impossible.

    >>> round(yes_probability(math.log(0.3), math.log(0.1)), 6)  # 0.3 / (0.3 + 0.1)
    0.75
    >>> yes_probability(-math.inf, -2.0), yes_probability(-math.inf, -math.inf)
    (0.0, None)
    """
    if logp_yes == -math.inf and logp_no == -math.inf:
        return None
    diff = logp_yes - logp_no
    return 1 / (1 + math.exp(-diff)) if diff > -700 else 0.0


def yes_frequency(samples: list[str]) -> float | None:
    """Share of yes among the samples that begin with yes or no; None if none does.

    >>> yes_frequency([" Yes.", " no", "yes, because", " maybe"])  # 2 yes, 1 no
    0.6666666666666666
    """
    first = [re.sub(r"[^a-z]", " ", s.lower()).split()[:1] for s in samples]
    votes = [w[0] for w in first if w and w[0] in ("yes", "no")]
    return votes.count("yes") / len(votes) if votes else None


@register("factuality", "llm_judge")
@register("relevance", "llm_judge")
@register("logicality", "llm_judge")
@register("consistency", "llm_judge")
@register("coherence", "llm_judge")
@register("fluency", "llm_judge")
@register("naturalness", "llm_judge")
@register("readability", "llm_judge")
class LLMJudge:
    """P(yes) of a judge LM asked whether the rationale meets the aspect's criterion, in [0, 1].

    Args:
        lm: the judge (any ``lmcot.lm`` backend; the reader unless the config names another).
        aspect: which criterion of the rubric to ask.
        rubric: ``instruction``, ``template`` (``str.format`` with ``evidence``, an
            ``Evidence: ...`` line or nothing, ``question``, ``rationale``, ``criterion``),
            ``version``, and ``aspects.<aspect>`` with
            ``criterion``, ``evidence`` (bool) and ``exemplars`` (dicts with ``evidence``,
            ``question``, ``rationale``, ``label`` yes/no).
        evidence: ``retrieved`` or ``supporting`` (see the module docstring).
        evidence_sentences: how many sentences ``retrieved`` shows.
        shots: how many of the aspect's exemplars to show (each adds ~80 tokens per call).
        fallback_samples: samples per rationale when the backend has no log-probabilities.
        seed: seeds those samples.

    Blind spots: a small judge mostly measures its prior for " yes" on similar-looking prompts;
    its probabilities rank rationales, they are not calibrated; it sees only the retrieved
    evidence, not the whole context. None for an empty rationale.
    """

    def __init__(
        self,
        lm: LM,
        aspect: str,
        rubric: dict,
        evidence: str = "retrieved",
        evidence_sentences: int = 4,
        shots: int = 2,
        fallback_samples: int = 8,
        seed: int = 0,
    ):
        if aspect not in rubric["aspects"]:
            known = ", ".join(rubric["aspects"])
            raise ValueError(f"the judge rubric has no criterion for {aspect!r} (has: {known})")
        if evidence not in ("retrieved", "supporting"):
            raise ValueError(f"evidence must be 'retrieved' or 'supporting', got {evidence!r}")
        self.lm, self.aspect, self.rubric = lm, aspect, rubric
        self.criterion = rubric["aspects"][aspect]
        self.evidence, self.k, self.shots = evidence, evidence_sentences, shots
        self.fallback = GenerationParams(max_new_tokens=2, temperature=1.0, seed=seed)
        self.fallback_samples = fallback_samples
        self.uses_gold = evidence == "supporting" and self.criterion.get("evidence", False)

    def _block(self, evidence: list[str], question: str, rationale: str) -> str:
        # aspects about the text alone (fluency, readability ...) get no evidence line
        shown = f"Evidence: {' '.join(evidence)}\n" if self.criterion.get("evidence") else ""
        return self.rubric["template"].format(
            evidence=shown, question=question, rationale=rationale,
            criterion=self.criterion["criterion"],
        )  # fmt: skip

    def prompt(self, example: Example, rationale: str) -> str:
        """The judge prompt for one rationale."""
        if self.evidence == "supporting":
            evidence = example.supporting_sentences()
        else:
            evidence = retrieve(example, f"{example.question} {rationale}", self.k)
        shots = [
            self._block([ex.get("evidence", "")], ex["question"], ex["rationale"])
            + f" {ex['label']}"
            for ex in self.criterion.get("exemplars", [])[: self.shots]
        ]
        query = self._block(evidence, example.question, rationale)
        return "\n\n".join([self.rubric["instruction"], *shots, query])

    def __call__(self, prompts, completions, **columns) -> list[float | None]:
        examples = require_examples(columns, completions, self.aspect)
        rows = [i for i, c in enumerate(completions) if c.strip()]
        judge_prompts = [self.prompt(examples[i], completions[i].strip()) for i in rows]
        scores: list[float | None] = [None] * len(completions)
        try:
            yes = self.lm.logprobs(judge_prompts, [" yes"] * len(rows))
            no = self.lm.logprobs(judge_prompts, [" no"] * len(rows))
            probabilities = [yes_probability(y, n) for y, n in zip(yes, no)]
        except UnsupportedByBackend:
            samples = self.lm.generate(judge_prompts, self.fallback, n=self.fallback_samples)
            probabilities = [yes_frequency(s) for s in samples]
        for i, p in zip(rows, probabilities):
            scores[i] = p
        return scores
