"""Bootstrap intervals: exact on trivial cases, nominal coverage on a case with a known answer."""

import numpy as np
import pytest

from lmcot.stats import bootstrap_ci, paired_bootstrap_diff


def test_interval_of_a_constant_is_the_constant_and_brackets_the_mean_otherwise():
    assert bootstrap_ci([0.0] * 7) == (0.0, 0.0)
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(values, seed=3)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45  # mean .3, standard error ~.046
    assert bootstrap_ci(values, seed=3) == (lo, hi)  # seeded


def test_paired_difference_is_over_ids_not_positions():
    a = {"q1": 1.0, "q2": 0.0, "q3": 1.0}
    b = {"q3": 1.0, "q2": 0.0, "q1": 1.0}  # same scores, other order
    assert paired_bootstrap_diff(a, b) == (0.0, (0.0, 0.0))


def test_ids_missing_on_one_side_are_named():
    with pytest.raises(ValueError, match=r"1 only in the first \(\['q9'\]\)"):
        paired_bootstrap_diff({"q1": 1.0, "q9": 0.0}, {"q1": 1.0})


def test_paired_interval_covers_a_known_difference_at_about_the_nominal_rate():
    # two correlated methods: B is right whenever A is, plus 10% of A's misses, so the true
    # difference of EM is p_b - p_a = 0.1 * (1 - 0.5) = 0.05
    true_diff, n, repetitions, covered = 0.05, 300, 200, 0
    rng = np.random.default_rng(0)
    for rep in range(repetitions):
        a = rng.random(n) < 0.5
        b = a | (rng.random(n) < 0.1)
        diff, (lo, hi) = paired_bootstrap_diff(
            dict(enumerate(b.astype(float))), dict(enumerate(a.astype(float))),
            num_resamples=500, seed=rep,
        )  # fmt: skip
        assert lo <= diff <= hi
        covered += lo <= true_diff <= hi
    assert 0.90 <= covered / repetitions <= 0.99


def test_a_thousand_examples_resample_in_one_call():
    # vectorised: 2000 resamples of 1000 ids is one (2000, 1000) index array, not a loop
    scores = dict(enumerate(np.random.default_rng(1).random(1000) < 0.4))
    diff, (lo, hi) = paired_bootstrap_diff(scores, {i: 0.0 for i in scores})
    assert lo < diff < hi
