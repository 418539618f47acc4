"""Bootstrap intervals: exact on trivial cases, nominal coverage on a case with a known answer,
and seeds that repeat the questions counted as the questions they are."""

import numpy as np
import pytest

from lmcot.stats import bootstrap_ci, cluster_bootstrap_diff, paired_bootstrap_diff


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


def kd_vs_standard(n: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.5
    b = a | (rng.random(n) < 0.3)
    return dict(enumerate(b.astype(float))), dict(enumerate(a.astype(float)))


def pooled(jobs) -> tuple[dict, dict]:
    """The jobs' (job, id) pairs as if each were a question of its own (the report's old way)."""
    return tuple({(j, i): v for j, job in enumerate(jobs) for i, v in job[side].items()}
                 for side in (0, 1))  # fmt: skip


def test_three_identical_seeds_give_the_interval_of_one_job():
    one = kd_vs_standard(60, seed=0)
    alone = cluster_bootstrap_diff([one], num_resamples=1000, seed=4)
    assert cluster_bootstrap_diff([one] * 3, num_resamples=1000, seed=4) == alone
    assert alone[2] == 60  # distinct questions, not (job, question) pairs
    # one job alone: the paired bootstrap over its questions, draw for draw
    assert alone[:2] == paired_bootstrap_diff(*one, num_resamples=1000, seed=4)
    # what pooling (job, question) pairs as if they were new questions gave: ~1/sqrt(3) as wide
    (lo, hi), (pooled_lo, pooled_hi) = alone[1], paired_bootstrap_diff(
        *pooled([one] * 3), num_resamples=1000, seed=4
    )[1]  # fmt: skip
    assert pooled_hi - pooled_lo < 0.7 * (hi - lo)


def test_seeds_on_other_questions_add_questions_and_each_pair_weighs_once():
    first, second = kd_vs_standard(30, seed=1), kd_vs_standard(50, seed=2)
    second = tuple({f"other-{i}": v for i, v in side.items()} for side in second)
    diff, (lo, hi), questions = cluster_bootstrap_diff([first, second], num_resamples=500)
    both = [a[i] - b[i] for a, b in (first, second) for i in a]
    assert questions == 80 and diff == pytest.approx(np.mean(both)) and lo < diff < hi


def test_a_job_missing_ids_of_its_baseline_is_named():
    good = ({"q1": 1.0}, {"q1": 0.0})
    with pytest.raises(ValueError, match=r"1 only in the second \(\['q2'\]\)"):
        cluster_bootstrap_diff([good, ({"q1": 1.0}, {"q1": 0.0, "q2": 1.0})])


def test_cluster_interval_covers_a_known_difference_over_seeds_at_about_the_nominal_rate():
    # three seeds answer the same 100 questions; a question's outcome mostly repeats across
    # seeds: A right with p .5 per question, B right where A is or where the question is easy
    # for B (p .2); each seed loses B's gain on a question with p .1. True difference:
    # .5 * .2 * .9 = .09. Pooling the 300 (seed, question) pairs as independent under-covers.
    true_diff, n, seeds, repetitions = 0.09, 100, 3, 200
    rng = np.random.default_rng(0)
    covered = {"cluster": 0, "pooled": 0}
    for rep in range(repetitions):
        a, easy = rng.random(n) < 0.5, rng.random(n) < 0.2
        jobs = []
        for _ in range(seeds):
            b = a | (easy & (rng.random(n) >= 0.1))
            jobs.append((dict(enumerate(b.astype(float))), dict(enumerate(a.astype(float)))))
        _, (lo, hi), _ = cluster_bootstrap_diff(jobs, num_resamples=500, seed=rep)
        covered["cluster"] += lo <= true_diff <= hi
        _, (lo, hi) = paired_bootstrap_diff(*pooled(jobs), num_resamples=500, seed=rep)
        covered["pooled"] += lo <= true_diff <= hi
    assert 0.90 <= covered["cluster"] / repetitions <= 0.99
    assert covered["pooled"] / repetitions < 0.85
