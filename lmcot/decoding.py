"""How the student's rationales become one answer: greedy, self-consistency, top quality.

A decoding gets the questions, the student's prompts and a ``read`` function (the reader
answering each rationale, batched and cached) and returns one (rationale, answer) per question.
SC draws k rationales per question in one ``generate`` call, the reader answers all of them,
and the majority of the normalised answers wins. Top quality draws k rationales too, but the
reader only sees the one that a gold-free quality registry scores highest: the paper's check
of whether the best-looking rationale gives the best answer.
"""

from collections import Counter
from collections.abc import Callable

from lmcot.data.example import Example
from lmcot.lm.base import LM, GenerationParams
from lmcot.metrics import normalize_answer
from lmcot.rewards.registry import RewardRegistry, select_best

# read(rationales per question) -> answers per question, same shape
Read = Callable[[list[list[str]]], list[list[str]]]


def majority_vote(answers: list[str]) -> int:
    """Index of the answer whose normalised form is most frequent.

    Ties go to the answer that was sampled first, so the vote is deterministic (the order of
    samples is fixed by the seed). Empty answers vote only if nothing else was answered.

    >>> majority_vote(["Paris", "London", "paris.", "London"])  # 2-2 tie: Paris came first
    0
    >>> majority_vote(["", "Rome", "", ""])
    1
    """
    keys = [normalize_answer(a) for a in answers]
    counts = Counter(k for k in keys if k) or Counter(keys)
    best = max(counts.values())
    return next(i for i, k in enumerate(keys) if counts.get(k) == best)


class Greedy:
    """One greedy rationale per question.

    Args:
        max_new_tokens: rationale length budget.
    """

    suffix = ""  # method name suffix: lm_guided_kd

    def __init__(self, max_new_tokens: int = 64):
        self.max_new_tokens = max_new_tokens

    def __call__(self, examples: list[Example], prompts: list[str], student: LM, stop: tuple,
                 read: Read):  # fmt: skip
        params = GenerationParams(max_new_tokens=self.max_new_tokens, stop=stop)
        rationales = student.generate(prompts, params)
        answers = read(rationales)
        return [(r[0], a[0]) for r, a in zip(rationales, answers)]


class SelfConsistency:
    """k sampled rationales per question, the reader answers each, the majority answer wins.

    With ``num_samples=1`` this is one *sampled* rationale (not greedy): the baseline that
    shows what the vote adds. The returned rationale is the first one that led to the winner.

    Args:
        num_samples: k rationales per question.
        temperature: sampling temperature (> 0).
        top_p: nucleus mass.
        max_new_tokens: rationale length budget.
        seed: seeds the sampling.
    """

    suffix = "_sc"

    def __init__(
        self,
        num_samples: int = 5,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_new_tokens: int = 64,
        seed: int = 0,
    ):
        if temperature <= 0:
            raise ValueError(
                f"self-consistency samples: temperature must be > 0, got {temperature}"
            )
        self.num_samples = num_samples
        self.params = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                           seed=seed)  # fmt: skip

    def __call__(self, examples: list[Example], prompts: list[str], student: LM, stop: tuple,
                 read: Read):  # fmt: skip
        rationales = self.sample(prompts, student, stop)
        answers = read(rationales)
        winners = [majority_vote(a) for a in answers]
        return [(r[w], a[w]) for r, a, w in zip(rationales, answers, winners)]

    def sample(self, prompts: list[str], student: LM, stop: tuple) -> list[list[str]]:
        """k rationales per prompt, in one ``generate`` call."""
        return student.generate(
            prompts, GenerationParams(stop=stop, **self.params), self.num_samples
        )


class TopQuality(SelfConsistency):
    """k sampled rationales per question; the reader answers only the best by quality.

    Args:
        registry: scores rationales; it must read no gold annotation (``reward@selection:
            gold_free``), since it selects at test time.
        num_samples, temperature, top_p, max_new_tokens, seed: as :class:`SelfConsistency`.
    """

    suffix = "_top_quality"
    needs_registry = True  # the evaluation stage builds it with the reader it holds

    def __init__(self, registry: RewardRegistry, **sampling):
        super().__init__(**sampling)
        if registry.uses_gold:
            raise ValueError(
                f"decoding=top_quality selects rationales at test time, but the aspects "
                f"{registry.uses_gold} read gold annotations: use the gold-free `selection` "
                "reward (conf/reward/gold_free.yaml)"
            )
        self.registry = registry

    def __call__(self, examples: list[Example], prompts: list[str], student: LM, stop: tuple,
                 read: Read):  # fmt: skip
        k = self.num_samples
        rationales = self.sample(prompts, student, stop)
        scores = self.registry(
            [p for p in prompts for _ in range(k)],
            [r for rs in rationales for r in rs],
            examples=[ex for ex in examples for _ in range(k)],
        )
        best = select_best(scores.aggregate, k)
        answers = read([[rs[b]] for rs, b in zip(rationales, best)])
        return [(rs[b], a[0]) for rs, b, a in zip(rationales, best, answers)]
