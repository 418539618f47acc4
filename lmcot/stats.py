"""Percentile-bootstrap 95% intervals for EM, alone and as a paired difference of two methods.

At the sizes this project evaluates (40 to a few hundred questions) a difference of a few EM
points is often noise; these intervals say which differences the data supports. The paired
version resamples question ids, so both methods are always compared on the same questions,
which is far tighter than comparing two independent intervals. Over several jobs (seeds) of one
setting the cluster version resamples question ids too, each drawn question bringing the paired
differences of every job that answered it: a seed that repeats the questions adds no
resampling units, so it cannot narrow the interval by itself looking like new questions.
Written with numpy (a few lines) rather than ``scipy.stats.bootstrap`` to keep scipy out of
the dependencies and to resample pairs by id explicitly.
"""

from collections.abc import Mapping, Sequence

import numpy as np

NUM_RESAMPLES = 2000
LEVEL = 0.95


def _percentile_interval(totals: np.ndarray, counts: np.ndarray, num_resamples: int, seed: int,
                         level: float):  # fmt: skip
    """Percentile interval of ``sum(totals) / sum(counts)`` over resampled units: examples
    (counts of 1) or clusters of ``counts[i]`` values that sum to ``totals[i]``."""
    if len(totals) == 0:
        raise ValueError("bootstrap of an empty sample: no examples to resample")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(totals), size=(num_resamples, len(totals)))
    means = totals[rows].sum(axis=1) / counts[rows].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float],
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example scores (EM: 0/1 values).

    >>> bootstrap_ci([1.0] * 10)
    (1.0, 1.0)
    """
    values = np.asarray(values, dtype=float)
    return _percentile_interval(values, np.ones_like(values), num_resamples, seed, level)


def paired_bootstrap_diff(
    a: Mapping[object, float],
    b: Mapping[object, float],
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, tuple[float, float]]:
    """Mean of ``a - b`` over shared example ids and its paired bootstrap interval.

    ``a`` and ``b`` map example id -> score; both must hold the same ids (a method that skipped
    questions cannot be compared on the rest without saying so).

    >>> paired_bootstrap_diff({"q1": 1.0, "q2": 1.0}, {"q1": 0.0, "q2": 1.0}, num_resamples=200)[0]
    0.5
    """
    _check_same_ids(a, b)
    ids = list(a)
    diffs = np.array([a[i] for i in ids], dtype=float) - np.array([b[i] for i in ids], dtype=float)
    interval = _percentile_interval(diffs, np.ones_like(diffs), num_resamples, seed, level)
    return float(diffs.mean()), interval


def cluster_bootstrap_diff(
    jobs: Sequence[tuple[Mapping[object, float], Mapping[object, float]]],
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, tuple[float, float], int]:
    """Mean of ``a - b`` over every job's questions, its question-cluster interval, and the
    number of distinct questions.

    ``jobs`` holds one ``(a, b)`` pair of id -> score maps per job (a seed of one setting),
    each paired as in :func:`paired_bootstrap_diff`. Question ids are resampled; a drawn id
    contributes the difference of every job that answered it, and the mean weighs each
    (job, question) pair once. Jobs that repeat each other give the interval of one of them
    (exactly for EM's 0/1 scores; up to float rounding otherwise).

    >>> one = ({"q1": 1.0, "q2": 1.0}, {"q1": 0.0, "q2": 1.0})
    >>> cluster_bootstrap_diff([one, one], num_resamples=200) == (
    ...     *cluster_bootstrap_diff([one], num_resamples=200)[:2], 2)
    True
    """
    totals: dict[object, float] = {}
    counts: dict[object, int] = {}
    for a, b in jobs:
        _check_same_ids(a, b)
        for i in a:
            totals[i] = totals.get(i, 0.0) + float(a[i]) - float(b[i])
            counts[i] = counts.get(i, 0) + 1
    ids = sorted(totals, key=str)  # the same questions resample alike, whatever the job order
    t = np.array([totals[i] for i in ids], dtype=float)
    c = np.array([counts[i] for i in ids], dtype=float)
    interval = _percentile_interval(t, c, num_resamples, seed, level)
    return float(t.sum() / c.sum()), interval, len(ids)


def cluster_bootstrap_mean(
    jobs: Sequence[Mapping[object, float]],
    num_resamples: int = NUM_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, tuple[float, float], int]:
    """Mean score over every job's questions, its question-cluster interval, and the number of
    distinct questions: :func:`cluster_bootstrap_diff` for one method's scores (id -> score
    per job) rather than a paired difference, so the seeds of a setting widen nothing by
    repeating questions.

    >>> one = {"q1": 1.0, "q2": 0.0, "q3": 1.0}
    >>> cluster_bootstrap_mean([one, one], num_resamples=200) == (
    ...     *cluster_bootstrap_mean([one], num_resamples=200)[:2], 3)
    True
    """
    totals: dict[object, float] = {}
    counts: dict[object, int] = {}
    for scores in jobs:
        for i, value in scores.items():
            totals[i] = totals.get(i, 0.0) + float(value)
            counts[i] = counts.get(i, 0) + 1
    ids = sorted(totals, key=str)
    t = np.array([totals[i] for i in ids], dtype=float)
    c = np.array([counts[i] for i in ids], dtype=float)
    interval = _percentile_interval(t, c, num_resamples, seed, level)
    return float(t.sum() / c.sum()), interval, len(ids)


def _check_same_ids(a: Mapping, b: Mapping) -> None:
    only_a, only_b = sorted(set(a) - set(b), key=str), sorted(set(b) - set(a), key=str)
    if only_a or only_b:
        raise ValueError(
            f"paired bootstrap needs the same example ids on both sides: {len(only_a)} only in "
            f"the first ({only_a[:5]}), {len(only_b)} only in the second ({only_b[:5]})"
        )
