"""Seed spread, bootstrap intervals over queries and paired tests, checked against scipy on fixed data."""

import math

import numpy as np
import pytest
from scipy import stats

from mcnflow.statistics import (GROUP_MEAN, aggregate_value, bootstrap_interval, common_keys, paired_test, scores_of,
                                seed_summary, statistics_settings)

# 40 queries: per-query R@10 indicators (x100) of two experiments on the same queries
RNG = np.random.default_rng(7)
REFERENCE = (RNG.random(40) < 0.4).astype(float) * 100
BETTER = np.where(RNG.random(40) < 0.5, 100.0, REFERENCE)  # the reference's hits plus more


def settings(**given):
    """The config's statistics settings: the schema's defaults, with ``given`` overriding them."""
    return statistics_settings(given)


def test_seed_summary_is_mean_and_sample_std():
    summary = seed_summary([40.0, 50.0, 60.0])
    assert summary.mean == 50.0 and summary.std == pytest.approx(10.0) and summary.n == 3
    one = seed_summary([40.0])
    assert one.mean == 40.0 and math.isnan(one.std)


def test_bootstrap_interval_equals_scipy_percentile_bootstrap():
    interval = bootstrap_interval(REFERENCE, "mean", settings(resamples=2000, seed=3))
    expected = stats.bootstrap((REFERENCE,), np.mean, confidence_level=0.95, n_resamples=2000,
                               method="percentile", rng=np.random.default_rng(3)).confidence_interval
    assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))
    assert interval.low < REFERENCE.mean() < interval.high
    # a wider confidence gives a wider interval; the median aggregate works too
    wide = bootstrap_interval(REFERENCE, "mean", settings(confidence=0.99, resamples=2000, seed=3))
    assert wide.low <= interval.low and wide.high >= interval.high
    ranks = RNG.integers(1, 30, size=40).astype(float)
    median = bootstrap_interval(ranks, "median", settings(resamples=500))
    assert median.low <= np.median(ranks) <= median.high


def test_bootstrap_of_a_constant_is_a_point():
    interval = bootstrap_interval([100.0] * 10, "mean", settings())
    assert (interval.low, interval.high) == (100.0, 100.0)


def test_paired_test_equals_scipy_paired_permutation_test():
    difference, p = paired_test(BETTER, REFERENCE, "mean", settings(resamples=5000, seed=1))
    expected = stats.permutation_test((BETTER, REFERENCE), lambda x, y, axis=-1: np.mean(x, axis=axis)
                                      - np.mean(y, axis=axis), permutation_type="samples", n_resamples=5000,
                                      alternative="two-sided", rng=np.random.default_rng(1))
    assert difference == pytest.approx(BETTER.mean() - REFERENCE.mean())
    assert p == pytest.approx(expected.pvalue)
    assert p < 0.01  # a real improvement on 40 queries
    # the same values against themselves: no difference at all
    assert paired_test(REFERENCE, REFERENCE, "mean", settings()) == (0.0, 1.0)
    # swapping the pairs' order flips the sign, not the p-value
    flipped, p_flipped = paired_test(REFERENCE, BETTER, "mean", settings(resamples=5000, seed=1))
    assert flipped == pytest.approx(-difference) and p_flipped == pytest.approx(p)


def test_paired_test_is_not_significant_for_noise():
    rng = np.random.default_rng(11)
    a = (rng.random(30) < 0.5) * 100.0
    b = (rng.random(30) < 0.5) * 100.0
    _, p = paired_test(a, b, "mean", settings(resamples=2000))
    assert p > 0.05


def test_scores_hold_the_queries_every_seed_scored():
    """An experiment's (seeds x queries) matrix holds the queries every seed scored, in the first seed's
    order; a comparison the queries every seed of both experiments scored."""
    def record(seed, values):
        return {"seed": seed, "per_query": {"keys": list(values), "values": {"recall_at_1": list(values.values())}}}

    scores = scores_of([record(1, {"q2": 0.0, "q1": 100.0, "q4": 100.0}),
                        record(2, {"q1": 0.0, "q2": 0.0, "q3": 100.0, "q4": 0.0})], "recall_at_1")
    assert scores.seeds == [1, 2] and scores.keys() == ["q2", "q1", "q4"]
    assert scores.matrix(scores.keys()).tolist() == [[0.0, 100.0, 100.0], [0.0, 0.0, 0.0]]
    assert scores.matrix(scores.keys()).mean(axis=0).tolist() == [0.0, 50.0, 50.0]  # the seeds pooled per query
    other = scores_of([record(1, {"q4": 1.0, "q1": 2.0})], "recall_at_1")
    assert common_keys([scores, other]) == ["q1", "q4"] and common_keys([other, scores]) == ["q4", "q1"]
    assert scores_of([record(1, {"q1": 1.0})], "recall_at_5") is None


def test_settings_default_to_the_config_schema():
    from mcnflow.core.config import load_schema
    properties = load_schema()["properties"]["statistics"]["properties"]
    # every key has a default in the schema; an object's default is its own keys' defaults
    defaults = {k: ({name: leaf["default"] for name, leaf in v["properties"].items()} if "properties" in v
                    else v["default"]) for k, v in properties.items()}
    assert statistics_settings(None) == defaults
    assert defaults["primary_metric"]["retrieval"] == "recall_at_10" and defaults["adjustment"] == "holm"
    assert defaults["interval"] == "seeds_and_queries"
    assert statistics_settings({"resamples": 99}) == {**defaults, "resamples": 99}
    assert statistics_settings({"primary_metric": {"retrieval": "recall_at_1"}})["primary_metric"] == {
        **defaults["primary_metric"], "retrieval": "recall_at_1"}


# CrossTask's recall: per-video recalls averaged within each task, then over the tasks
TASKS = ["a"] * 12 + ["b"] * 5 + ["c"]            # task c has one video
VIDEO_RECALLS = np.concatenate([RNG.random(12) * 100, RNG.random(5) * 40, [70.0]])


def test_group_mean_is_the_mean_of_the_groups_means():
    expected = np.mean([VIDEO_RECALLS[:12].mean(), VIDEO_RECALLS[12:17].mean(), 70.0])
    assert aggregate_value(VIDEO_RECALLS, GROUP_MEAN, TASKS) == pytest.approx(expected)
    assert aggregate_value(VIDEO_RECALLS, GROUP_MEAN, TASKS) != pytest.approx(VIDEO_RECALLS.mean())
    with pytest.raises(ValueError, match="needs a group"):
        aggregate_value(VIDEO_RECALLS, GROUP_MEAN)


def test_group_mean_interval_resamples_videos_within_each_task():
    """A stratified bootstrap as scipy computes it with one sample per task; a one-video task is fixed."""
    interval = bootstrap_interval(VIDEO_RECALLS, GROUP_MEAN, settings(resamples=2000, seed=5), TASKS)
    expected = stats.bootstrap((VIDEO_RECALLS[:12], VIDEO_RECALLS[12:17]),
                               lambda a, b, axis=-1: (np.mean(a, axis=axis) + np.mean(b, axis=axis) + 70.0) / 3,
                               n_resamples=2000, method="percentile",
                               rng=np.random.default_rng(5)).confidence_interval
    assert (interval.low, interval.high) == pytest.approx((expected.low, expected.high))
    assert interval.low < aggregate_value(VIDEO_RECALLS, GROUP_MEAN, TASKS) < interval.high
    # one video per task: nothing to resample within a task
    single = bootstrap_interval([10.0, 50.0], GROUP_MEAN, settings(), ["a", "b"])
    assert (single.low, single.high) == (30.0, 30.0)


def test_group_mean_paired_test_weighs_each_video_by_its_task():
    better = VIDEO_RECALLS + np.where(np.arange(18) < 12, 20.0, 0.0)   # better on task a only
    difference, p = paired_test(better, VIDEO_RECALLS, GROUP_MEAN, settings(resamples=3000, seed=2), TASKS)
    assert difference == pytest.approx(20.0 / 3)   # +20 on one task of three
    weights = np.array([1 / 36] * 12 + [1 / 15] * 5 + [1 / 3])
    expected = stats.permutation_test((better, VIDEO_RECALLS),
                                      lambda x, y, axis=-1: np.sum((x - y) * weights, axis=axis),
                                      permutation_type="samples", n_resamples=3000, alternative="two-sided",
                                      rng=np.random.default_rng(2))
    assert p == pytest.approx(expected.pvalue) and p < 0.01


def test_two_level_interval_of_task_means_and_with_bca():
    """Seeds x videos of a mean of task means: the two-level bootstrap resamples the seeds, then the videos
    within each task; BCa (its jackknife leaves out one video or one seed) gives a finite interval too."""
    from mcnflow.statistics import experiment_estimate
    seeds = np.stack([VIDEO_RECALLS, np.clip(VIDEO_RECALLS + RNG.normal(0, 30, 18), 0, 100)])
    for method in ("percentile", "BCa"):
        estimate = experiment_estimate(seeds, GROUP_MEAN, settings(resamples=999, method=method), TASKS)
        assert estimate.value == pytest.approx(aggregate_value(seeds.mean(axis=0), GROUP_MEAN, TASKS))
        assert estimate.low < estimate.value < estimate.high and math.isfinite(estimate.low), method
    pooled = bootstrap_interval(seeds.mean(axis=0), GROUP_MEAN, settings(resamples=999), TASKS)
    estimate = experiment_estimate(seeds, GROUP_MEAN, settings(resamples=999), TASKS)
    assert estimate.high - estimate.low > pooled.high - pooled.low
