"""Seed spread, bootstrap intervals over queries and paired tests, checked against scipy on fixed data."""

import math

import numpy as np
import pytest
from scipy import stats

from mcnflow.statistics import bootstrap_interval, paired_test, paired_values, pool_seeds, seed_summary

# 40 queries: per-query R@10 indicators (x100) of two experiments on the same queries
RNG = np.random.default_rng(7)
REFERENCE = (RNG.random(40) < 0.4).astype(float) * 100
BETTER = np.where(RNG.random(40) < 0.5, 100.0, REFERENCE)  # the reference's hits plus more


def test_seed_summary_is_mean_and_sample_std():
    summary = seed_summary([40.0, 50.0, 60.0])
    assert summary.mean == 50.0 and summary.std == pytest.approx(10.0) and summary.n == 3
    one = seed_summary([40.0])
    assert one.mean == 40.0 and math.isnan(one.std)


def test_bootstrap_interval_equals_scipy_percentile_bootstrap():
    interval = bootstrap_interval(REFERENCE, "mean", confidence=0.95, resamples=2000, seed=3)
    expected = stats.bootstrap((REFERENCE,), np.mean, confidence_level=0.95, n_resamples=2000,
                               method="percentile", rng=np.random.default_rng(3)).confidence_interval
    assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))
    assert interval.low < REFERENCE.mean() < interval.high
    # a wider confidence gives a wider interval; the median aggregate works too
    wide = bootstrap_interval(REFERENCE, "mean", confidence=0.99, resamples=2000, seed=3)
    assert wide.low <= interval.low and wide.high >= interval.high
    ranks = RNG.integers(1, 30, size=40).astype(float)
    median = bootstrap_interval(ranks, "median", resamples=500, seed=0)
    assert median.low <= np.median(ranks) <= median.high


def test_bootstrap_of_a_constant_is_a_point():
    interval = bootstrap_interval([100.0] * 10)
    assert (interval.low, interval.high) == (100.0, 100.0)


def test_paired_test_equals_scipy_paired_permutation_test():
    difference, p = paired_test(BETTER, REFERENCE, "mean", resamples=5000, seed=1)
    expected = stats.permutation_test((BETTER, REFERENCE), lambda x, y, axis=-1: np.mean(x, axis=axis)
                                      - np.mean(y, axis=axis), permutation_type="samples", n_resamples=5000,
                                      alternative="two-sided", rng=np.random.default_rng(1))
    assert difference == pytest.approx(BETTER.mean() - REFERENCE.mean())
    assert p == pytest.approx(expected.pvalue)
    assert p < 0.01  # a real improvement on 40 queries
    # the same values against themselves: no difference at all
    assert paired_test(REFERENCE, REFERENCE) == (0.0, 1.0)
    # swapping the pairs' order flips the sign, not the p-value
    flipped, p_flipped = paired_test(REFERENCE, BETTER, "mean", resamples=5000, seed=1)
    assert flipped == pytest.approx(-difference) and p_flipped == pytest.approx(p)


def test_paired_test_is_not_significant_for_noise():
    rng = np.random.default_rng(11)
    a = (rng.random(30) < 0.5) * 100.0
    b = (rng.random(30) < 0.5) * 100.0
    _, p = paired_test(a, b, resamples=2000, seed=0)
    assert p > 0.05


def test_seeds_are_pooled_per_query_and_pairs_match_keys():
    pooled = pool_seeds({1: {"q1": 100.0, "q2": 0.0}, 2: {"q1": 0.0, "q2": 0.0, "q3": 100.0}})
    assert pooled == {"q1": 50.0, "q2": 0.0, "q3": 100.0}
    a, b = paired_values({"q1": 1.0, "q2": 2.0, "q3": 3.0}, {"q3": 30.0, "q1": 10.0})
    assert (a, b) == ([1.0, 3.0], [10.0, 30.0])
