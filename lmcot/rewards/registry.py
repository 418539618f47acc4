"""The reward registry: the configured aspect scorers, their weights and one aggregate.

Build it from the ``reward`` config with the reader the run already holds::

    registry = instantiate(cfg.reward, lm=reader)  # or build_registry(**cfg.reward, lm=reader)
    scores = registry(prompts, rationales, examples=examples)
    scores.aspects["factuality"]  # list[float | None], one per rationale
    scores.aggregate              # list[float | None]
    scores.means()                # {"factuality": 0.71, ...}: results.json quality.<method>.*

Flow of one call: (1) columns that a scorer produces (the task scorer's ``reader_answers``) are
computed once and handed to all; (2) each aspect scores the batch; non-finite scores become None
and are logged with the example id; (3) optional running z-normalisation per aspect;
(4) aggregation of the non-None aspects with their weights.

Evaluation compares methods, so it must not let one method's scores shift another's reference:
it takes (1)-(2) as ``registry.score``, z-scores every method against the statistics of all
methods' rationales (:func:`zscores`) and aggregates with ``registry.combine``; the running
statistics of (3) are for RL, where the reference follows the policy.
"""

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lmcot.rewards.base import ASPECTS

log = logging.getLogger(__name__)

AGGREGATIONS = ("weighted_sum", "mean", "product", "normalize_then_sum")


def aggregate(scores: Sequence[float | None], weights: Sequence[float], mode: str) -> float | None:
    """Combine one rationale's aspect scores; None scores are left out; None if all are.

    ``weighted_sum``/``normalize_then_sum``: sum of w*s (TRL's NaN-skipping sum);
    ``mean``: sum of w*s over the sum of the present weights; ``product``: product of s**w
    (a weighted geometric combination: any aspect near 0 sinks the whole).

    >>> aggregate([0.5, None, 1.0], [2.0, 1.0, 1.0], "weighted_sum")  # 2*0.5 + 1*1.0
    2.0
    >>> aggregate([0.5, None, 1.0], [2.0, 1.0, 1.0], "mean")  # (2*0.5 + 1*1.0) / (2 + 1)
    0.6666666666666666
    >>> aggregate([0.5, 0.25], [1.0, 2.0], "product")  # 0.5 * 0.25**2
    0.03125
    >>> aggregate([None, None], [1.0, 1.0], "mean") is None
    True
    """
    present = [(s, w) for s, w in zip(scores, weights) if s is not None]
    if not present:
        return None
    if mode in ("weighted_sum", "normalize_then_sum"):
        return sum(w * s for s, w in present)
    if mode == "mean":
        total = sum(w for _, w in present)
        return sum(w * s for s, w in present) / total if total else None
    if mode == "product":
        return math.prod(s**w for s, w in present)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {mode!r}")


class RunningNormalizer:
    """z-scores of one aspect against the mean/std of its last ``window`` scores (this batch
    included, so the first batch is normalised by its own statistics, as TRL's batch scaling).

    >>> norm = RunningNormalizer(window=4)
    >>> [None if z is None else round(z, 4) for z in norm([1.0, 3.0, None])]  # mean 2, std 1
    [-1.0, 1.0, None]
    """

    def __init__(self, window: int = 1024, eps: float = 1e-6):
        self.history: deque[float] = deque(maxlen=window)
        self.eps = eps

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history.clear()
        self.history.extend(state["history"])

    def __call__(self, scores: list[float | None]) -> list[float | None]:
        self.history.extend(s for s in scores if s is not None)
        if not self.history:
            return list(scores)
        mean = sum(self.history) / len(self.history)
        std = math.sqrt(sum((s - mean) ** 2 for s in self.history) / len(self.history))
        return [None if s is None else (s - mean) / (std + self.eps) for s in scores]


def zscores(scores: list[float | None], reference: Sequence[float | None],
            eps: float = 1e-6) -> list[float | None]:  # fmt: skip
    """z-scores of ``scores`` against the mean/std of ``reference`` (None left out), computed
    with exactly rounded sums, so the order of ``reference`` cannot change a digit.

    >>> z = zscores([1.0, None, 3.0], [3.0, None, 1.0, 2.0, 2.0])  # mean 2, std sqrt(.5)
    >>> [None if v is None else round(v, 4) for v in z]
    [-1.4142, None, 1.4142]
    """
    present = [s for s in reference if s is not None]
    if not present:
        return list(scores)
    mean = math.fsum(present) / len(present)
    std = math.sqrt(math.fsum((s - mean) ** 2 for s in present) / len(present))
    return [None if s is None else (s - mean) / (std + eps) for s in scores]


@dataclass
class RewardScores:
    """What a registry call returns.

    Attributes:
        aspects: raw score lists per enabled aspect, in config order (None: not applicable or
            non-finite).
        normalized: the scores that were aggregated (the running z-scores when normalising,
            else the raw ones).
        aggregate: one aggregate per rationale (None when no aspect applied).
        weights: the weight of each aspect.
    """

    aspects: dict[str, list[float | None]]
    normalized: dict[str, list[float | None]]
    aggregate: list[float | None]
    weights: dict[str, float]

    def means(self) -> dict[str, float | None]:
        """Mean raw score per aspect (None left out) and of ``aggregate``: results.json quality."""
        columns = {**self.aspects, "aggregate": self.aggregate}
        return {
            name: (sum(v) / len(v) if (v := [s for s in values if s is not None]) else None)
            for name, values in columns.items()
        }

    def rows(self) -> list[dict[str, float | None]]:
        """One dict per rationale (each aspect and ``aggregate``): a W&B table's rows."""
        names = [*self.aspects, "aggregate"]
        columns = [*self.aspects.values(), self.aggregate]
        return [dict(zip(names, values)) for values in zip(*columns)]


class RewardRegistry:
    """The enabled aspect scorers with weights and aggregation; called like one reward.

    Args:
        scorers: aspect -> scorer (TRL reward shape), in the order they are computed.
        weights: aspect -> weight; missing aspects weigh 1.0.
        aggregation: one of ``AGGREGATIONS``.
        normalize: z-normalise each aspect against its running statistics before aggregating
            (implied by ``normalize_then_sum``); puts aspects on different scales on one footing.
        normalize_window: how many recent scores per aspect the statistics use.
    """

    def __init__(
        self,
        scorers: dict,
        weights: dict[str, float] | None = None,
        aggregation: str = "weighted_sum",
        normalize: bool = False,
        normalize_window: int = 1024,
    ):
        if aggregation not in AGGREGATIONS:
            raise ValueError(
                f"reward.aggregation must be one of {AGGREGATIONS}, got {aggregation!r}"
            )
        normalize = normalize or aggregation == "normalize_then_sum"
        if normalize and aggregation == "product":
            raise ValueError(
                "reward.aggregation=product needs non-negative scores, but reward.normalize=true "
                "makes z-scores: use aggregation=weighted_sum or mean with normalize, or "
                "normalize=false with product"
            )
        if not scorers:
            raise ValueError("reward.aspects is empty: enable at least one aspect")
        self.scorers = dict(scorers)
        self.weights = {a: float((weights or {}).get(a, 1.0)) for a in self.scorers}
        self.aggregation = aggregation
        self.normalizers = (
            {a: RunningNormalizer(normalize_window) for a in self.scorers} if normalize else None
        )

    @property
    def uses_gold(self) -> list[str]:
        """The aspects whose scorer reads gold annotations (answers, supporting facts)."""
        return [a for a, s in self.scorers.items() if getattr(s, "uses_gold", True)]

    @property
    def normalizes(self) -> bool:
        """Whether aspects are z-scored before they are aggregated."""
        return self.normalizers is not None

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> RewardScores:
        """Score every rationale on every enabled aspect, then aggregate (see the module doc)."""
        raw = self.score(prompts, completions, **columns)
        normalized = (
            {a: self.normalizers[a](s) for a, s in raw.items()} if self.normalizers else raw
        )
        return self.combine(raw, normalized)

    def score(self, prompts: list[str], completions: list[str], **columns) -> dict:
        """Raw scores per aspect (None: not applicable or non-finite); no statistics change."""
        for scorer in self.scorers.values():
            if hasattr(scorer, "extra_columns"):
                missing = {k: v for k, v in scorer.extra_columns(prompts, completions, **columns)
                           .items() if k not in columns}  # fmt: skip
                columns |= missing
        ids = [ex.id for ex in columns["examples"]] if "examples" in columns else None
        return {
            aspect: self._checked(
                aspect, scorer(prompts, completions, **columns), completions, ids
            )
            for aspect, scorer in self.scorers.items()
        }

    def state_dict(self) -> dict:
        """The running statistics (normalising registries): a resumed RL run continues them."""
        return {a: n.state_dict() for a, n in (self.normalizers or {}).items()}

    def load_state_dict(self, state: dict) -> None:
        for aspect, normalizer in (self.normalizers or {}).items():
            normalizer.load_state_dict(state[aspect])

    def combine(self, raw: dict, normalized: dict) -> RewardScores:
        """Aggregate ``normalized`` (``raw`` itself when not normalising) row by row."""
        weights = [self.weights[a] for a in normalized]
        combined = [aggregate(row, weights, self.aggregation) for row in zip(*normalized.values())]
        return RewardScores(raw, normalized, combined, dict(self.weights))

    @staticmethod
    def _checked(aspect, scores, completions, ids) -> list[float | None]:
        # NaN/inf never reach the aggregate (nor training); None stays "not applicable"
        if len(scores) != len(completions):
            raise ValueError(f"{aspect}: {len(scores)} scores for {len(completions)} completions")
        checked = []
        for i, s in enumerate(scores):
            if s is not None and not math.isfinite(s):
                where = f"example {ids[i]}" if ids else f"row {i}"
                log.warning("reward %s: non-finite score %r for %s; set to None", aspect, s, where)
                s = None
            checked.append(None if s is None else float(s))
        return checked


def build_scorer(node, aspect: str, lm=None):
    """Build one ``reward/scorer`` config node for ``aspect`` (a built scorer passes through);
    ``lm`` goes to LM-based scorers unless the node configures its own ``lm``."""
    if not isinstance(node, DictConfig):
        return node
    own_lm = OmegaConf.select(node, "lm") is not None
    return instantiate(node, aspect=aspect, **({} if own_lm else {"lm": lm}))


def build_registry(
    aspects: Sequence[str],
    scorers: dict | DictConfig,
    weights: dict[str, float] | None = None,
    aggregation: str = "weighted_sum",
    normalize: bool = False,
    normalize_window: int = 1024,
    lm=None,
    **_,
) -> RewardRegistry:
    """Build the registry of ``aspects`` from the ``reward`` config: the ``_target_`` of
    ``conf/reward/*.yaml`` (with ``_recursive_: false``, so only enabled aspects are built).

    Args:
        aspects: enabled aspects, in computation order (each must have a ``scorers`` node).
        scorers: aspect -> scorer config node (``conf/reward/scorer/*``), or built scorers.
        weights, aggregation, normalize, normalize_window: see :class:`RewardRegistry`.
        lm: the LM handed to every LM-based scorer whose node sets no ``lm`` of its own: pass
            the reader you already hold, so no second copy is loaded.
        **_: other keys of the reward config (``judge``: the rubric the judge nodes point to).
    """
    aspects = list(aspects)
    unknown = [a for a in [*aspects, *(weights or {})] if a not in ASPECTS]
    if unknown:
        raise ValueError(f"unknown aspects {unknown}; aspects: {', '.join(ASPECTS)}")
    missing = [a for a in aspects if a not in scorers]
    if missing:
        raise ValueError(f"no scorer configured for {missing}: set reward.scorers.<aspect>")
    built = {a: build_scorer(scorers[a], a, lm) for a in aspects}
    weights = OmegaConf.to_container(weights) if isinstance(weights, DictConfig) else weights
    return RewardRegistry(built, weights, aggregation, normalize, normalize_window)


def select_best(aggregate: Sequence[float | None], k: int) -> list[int]:
    """Per question, the index (0..k-1) of its best rationale by aggregate quality.

    ``aggregate`` holds k consecutive scores per question (as ``LM.generate(n=k)`` flattened);
    None and non-finite scores rank last; ties go to the lowest index.

    >>> select_best([0.2, 0.9, 0.9, None, 0.1, 0.3], k=3)  # question 0: tie -> 1; question 1: 2
    [1, 2]
    >>> select_best([None, None], k=2)
    [0]
    """
    if k < 1 or len(aggregate) % k:
        raise ValueError(f"{len(aggregate)} scores do not split into groups of k={k}")

    def key(i: int, group: Sequence[float | None]) -> tuple[bool, float, int]:
        s = group[i]
        ok = s is not None and math.isfinite(s)
        return (ok, s if ok else 0.0, -i)

    groups = [aggregate[j : j + k] for j in range(0, len(aggregate), k)]
    return [max(range(k), key=lambda i, g=g: key(i, g)) for g in groups]
