"""How the student's rationales become one answer: greedy, self-consistency, top quality.

A decoding gets the questions, the student's prompts and a ``read`` function (the reader
answering each rationale, batched and cached) and returns one (rationale, answer) per question.
SC draws k rationales per question in one ``generate`` call, the reader answers all of them,
and the majority of the normalised answers wins. Top quality draws k rationales too, but the
reader only sees the one that a gold-free quality registry scores highest: the paper's check
of whether the best-looking rationale gives the best answer.

Adaptive self-consistency (Aggarwal et al., 2023, "Let's Sample Step by Step"): SC may draw its
k samples in rounds and stop a question once more samples cannot change its vote, or, with a
``confidence``, once the paper's Beta criterion says the leader beats the runner-up with that
probability. Round r asks the student for samples ``0..end`` and takes the new ones; the
student's cache holds the earlier ones, so it draws only the new (``LM.generate``), and a
fixed-k run on the same cache reads the very samples the rounds drew (and vice versa).
"""

import math
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


def leader_beats_runner_up(lead: int, second: int) -> float:
    """P(p_lead > p_second | votes) under a uniform prior (the Beta stopping criterion).

    With a uniform prior the leader's share of the two, ``p_lead / (p_lead + p_second)``, is
    Beta(lead + 1, second + 1); for integer votes P(share > 1/2) is a binomial tail.

    >>> leader_beats_runner_up(2, 0)  # 7/8
    0.875
    """
    n = lead + second + 1
    return sum(math.comb(n, j) for j in range(lead + 1)) / 2**n


def vote_settled(answers: list[str], k: int, confidence: float | None = None) -> bool:
    """Whether ``answers`` (of k) already decide the vote.

    Settled when the leader's margin over the runner-up exceeds the samples left (exact: the
    vote of all k ends the same), or when ``confidence`` is set and
    :func:`leader_beats_runner_up` reaches it. Empty answers settle nothing (any later
    non-empty answer would outvote them).

    >>> vote_settled(["x", "x", "x"], k=5), vote_settled(["x", "x", "y"], k=5)
    (True, False)
    """
    counts = Counter(a for a in map(normalize_answer, answers) if a)
    if not counts:
        return len(answers) >= k
    lead, second = [*(c for _, c in counts.most_common(2)), 0][:2]
    if lead - second > k - len(answers):
        return True
    return confidence is not None and leader_beats_runner_up(lead, second) >= confidence


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
    ``samples_used`` holds, after each call, how many samples each question used.

    Args:
        num_samples: k rationales per question.
        temperature: sampling temperature (> 0).
        top_p: nucleus mass.
        max_new_tokens: rationale length budget.
        seed: seeds the sampling.
        adaptive: draw samples in rounds and stop each question once its vote is settled
            (:func:`vote_settled`); off: all k at once, the paper's SC.
        round_size: samples per round when adaptive.
        confidence: adaptive only: also stop once the Beta criterion reaches this probability
            (e.g. 0.95; may change a vote that all k would decide otherwise); None: stop only
            when the vote can no longer change, so the answers equal fixed-k SC's.
    """

    suffix = "_sc"

    def __init__(
        self,
        num_samples: int = 5,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_new_tokens: int = 64,
        seed: int = 0,
        adaptive: bool = False,
        round_size: int = 3,
        confidence: float | None = None,
    ):
        if round_size < 1:
            raise ValueError(f"self-consistency round_size must be >= 1, got {round_size}")
        if confidence is not None and not 0.5 < confidence <= 1:
            raise ValueError(f"self-consistency confidence must be in (0.5, 1], got {confidence}")
        if temperature <= 0:
            raise ValueError(
                f"self-consistency samples: temperature must be > 0, got {temperature}"
            )
        self.num_samples = num_samples
        self.params = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                           seed=seed)  # fmt: skip
        self.adaptive, self.round_size, self.confidence = adaptive, round_size, confidence
        self.samples_used: list[int] = []

    def __call__(self, examples: list[Example], prompts: list[str], student: LM, stop: tuple,
                 read: Read):  # fmt: skip
        if self.adaptive:
            rationales, answers = self.sample_in_rounds(prompts, student, stop, read)
        else:
            rationales = self.sample(prompts, student, stop)
            answers = read(rationales)
        self.samples_used = [len(a) for a in answers]
        winners = [majority_vote(a) for a in answers]
        return [(r[w], a[w]) for r, a, w in zip(rationales, answers, winners)]

    def sample(self, prompts: list[str], student: LM, stop: tuple, n: int | None = None):
        """The first ``n`` (default k) rationales of each prompt, in one ``generate`` call."""
        params = GenerationParams(stop=stop, **self.params)
        return student.generate(prompts, params, n or self.num_samples)

    def sample_in_rounds(self, prompts: list[str], student: LM, stop: tuple, read: Read):
        """Rationales and answers per question, drawn in rounds until each vote is settled."""
        k = self.num_samples
        rationales: list[list[str]] = [[] for _ in prompts]
        answers: list[list[str]] = [[] for _ in prompts]
        open_ = list(range(len(prompts)))
        while open_:
            drawn = len(rationales[open_[0]])  # open questions have all drawn the same number
            end = min(drawn + self.round_size, k)
            fresh = self.sample([prompts[i] for i in open_], student, stop, end)
            new = [[] for _ in prompts]  # read takes every question; closed ones read nothing
            for i, samples in zip(open_, fresh):
                new[i] = samples[drawn:end]
            for i, got in enumerate(read(new)):
                rationales[i] += new[i]
                answers[i] += got
            open_ = [
                i for i in open_ if end < k and not vote_settled(answers[i], k, self.confidence)
            ]
        return rationales, answers


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
