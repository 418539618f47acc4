"""Percentile-bootstrap 95% intervals for EM, alone and as a paired difference of two methods.

At the sizes this project evaluates (40 to a few hundred questions) a difference of a few EM
points is often noise; these intervals say which differences the data supports. The paired
version resamples question ids, so both methods are always compared on the same questions,
which is far tighter than comparing two independent intervals. Written with numpy (a few lines)
rather than ``scipy.stats.bootstrap`` to keep scipy out of the dependencies and to resample
pairs by id explicitly.
"""

from collections.abc import Mapping, Sequence

import numpy as np

NUM_RESAMPLES = 2000
LEVEL = 0.95


def _percentile_interval(values: np.ndarray, num_resamples: int, seed: int, level: float):
    """Percentile interval of the mean of ``values`` (one row per unit) over resampled units."""
    if len(values) == 0:
        raise ValueError("bootstrap of an empty sample: no examples to resample")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(values), size=(num_resamples, len(values)))
    means = values[rows].mean(axis=1)
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
    return _percentile_interval(np.asarray(values, dtype=float), num_resamples, seed, level)


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
    only_a, only_b = sorted(set(a) - set(b), key=str), sorted(set(b) - set(a), key=str)
    if only_a or only_b:
        raise ValueError(
            f"paired bootstrap needs the same example ids on both sides: {len(only_a)} only in "
            f"the first ({only_a[:5]}), {len(only_b)} only in the second ({only_b[:5]})"
        )
    ids = list(a)
    diffs = np.array([a[i] for i in ids], dtype=float) - np.array([b[i] for i in ids], dtype=float)
    return float(diffs.mean()), _percentile_interval(diffs, num_resamples, seed, level)
