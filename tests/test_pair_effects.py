"""Pair effects, adjusted p-values, the two-level interval and the planning power, on fixed tables."""

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from mcnflow.statistics import (BOTH_TESTS, PRIMARY, SECONDARY, TWO_LEVEL, QUERY_ONLY, adjust_families,
                                adjusted_p_values,
                                contrast_estimate, experiment_estimate, minimum_detectable, pair_effect_rows,
                                statistics_settings, study, variance_components)

PAIRS = {"tv": ["tv"], "ta": ["ta"], "va": ["va"], "tv_ta": ["tv", "ta"], "tv_va": ["tv", "va"],
         "ta_va": ["ta", "va"], "tv_ta_va": ["tv", "ta", "va"], "tv_ta_va_per_pair": ["tv", "ta", "va"],
         "tv_norecon": ["tv"]}
SPACES = {"tv_ta_va_per_pair": "per_pair"}
# the config's experiment entries: tv_norecon trains tv without the reconstruction term, so it is no
# "tv" for any contrast
EXPERIMENTS = {name: {"pairs": pairs, "space": SPACES.get(name, "shared")} for name, pairs in PAIRS.items()}
EXPERIMENTS["tv_norecon"]["losses"] = {"reconstruction": {"enabled": False}}

# R@10 hits (x100) of four queries, one seed; va has no text branch (not scored)
HITS = {"tv": [100, 0, 0, 0], "ta": [0, 0, 0, 100], "tv_ta": [100, 100, 0, 100], "tv_va": [100, 0, 100, 0],
        "ta_va": [0, 0, 100, 100], "tv_ta_va": [100, 100, 100, 0], "tv_ta_va_per_pair": [100, 100, 100, 100],
        "tv_norecon": [0, 0, 0, 0]}
KEYS = ["0:a", "1:b", "2:c", "3:d"]


def record(experiment, seed, hits, benchmark="youcook2_retrieval"):
    base = {"experiment": experiment, "seed": seed, "pairs": PAIRS[experiment],
            "space": SPACES.get(experiment, "shared"), "benchmark": benchmark, "task": "retrieval"}
    if hits is None:
        return {**base, "metrics": {}, "note": "text branch not trained"}
    return {**base, "metrics": {"recall_at_10": float(np.mean(hits))},
            "per_query": {"keys": KEYS, "values": {"recall_at_10": [float(h) for h in hits]},
                          "aggregate": {"recall_at_10": "mean"}}}


def results(table=HITS, seeds=(1,)):
    out = [record(name, seed, hits[i] if len(seeds) > 1 else hits) for name, hits in table.items()
           for i, seed in enumerate(seeds)]
    return out + [record("va", seed, None) for seed in seeds]


def settings(**given):
    return statistics_settings({"resamples": 999, "reference": "tv_ta_va", **given})


def test_pair_effects_are_the_mean_of_the_contrasts_by_hand():
    rows = {r["pair"]: r for r in pair_effect_rows(results(), settings(interval="queries"),
                                                   {"youcook2_retrieval": "recall_at_10"}, EXPERIMENTS)}
    # tv: tv_ta - ta = 75 - 25 = 50, tv_ta_va - ta_va = 75 - 50 = 25 (tv_va - va: va not scored) -> 37.5
    assert rows["tv"]["effect"] == pytest.approx(37.5)
    assert rows["tv"]["contrasts"] == "tv_ta-ta;tv_ta_va-ta_va" and rows["tv"]["n_contrasts"] == 2
    # ta: tv_ta - tv = 75 - 25 = 50, tv_ta_va - tv_va = 75 - 50 = 25 -> 37.5 (tv_norecon trains otherwise)
    assert rows["ta"]["effect"] == pytest.approx(37.5)
    assert rows["ta"]["contrasts"] == "tv_ta-tv;tv_ta_va-tv_va"
    # va: ta_va - ta = 25, tv_ta_va - tv_ta = 0, tv_va - tv = 25 -> 50 / 3
    assert rows["va"]["effect"] == pytest.approx(50 / 3)
    assert rows["va"]["contrasts"] == "ta_va-ta;tv_ta_va-tv_ta;tv_va-tv" and rows["va"]["n_contrasts"] == 3
    # the space: per_pair - shared on the same three pairs = 100 - 75
    space = rows["per_pair vs shared"]
    assert space["kind"] == "space" and space["effect"] == pytest.approx(25.0)
    assert space["contrasts"] == "tv_ta_va_per_pair-tv_ta_va"
    assert all(r["family"] == PRIMARY and r["n_queries"] == 4 for r in rows.values())
    assert "fac vs shared" not in rows  # no fac experiment: no row
    # one seed: the query bootstrap and the permutation test (2^4 sign patterns, exact)
    assert rows["va"]["interval"] == QUERY_ONLY and rows["va"]["test"] == "paired permutation"
    assert rows["va"]["ci_low"] <= rows["va"]["effect"] <= rows["va"]["ci_high"]


def test_without_the_experiments_entries_results_give_pairs_and_space():
    """A hand-written settings JSON without experiments: pairs and space come from the results, so
    tv_norecon (no reconstruction) counts as a second tv."""
    rows = {r["pair"]: r for r in pair_effect_rows(results(), settings(interval="queries"),
                                                   {"youcook2_retrieval": "recall_at_10"})}
    assert rows["ta"]["contrasts"] == "tv_ta-tv;tv_ta-tv_norecon;tv_ta_va-tv_va"


def test_with_seeds_the_effect_is_the_mean_of_the_seed_means_differences():
    rng = np.random.default_rng(4)
    two = {name: [list(rng.choice([0, 100], 4)), list(rng.choice([0, 100], 4))] for name in HITS}
    found = study(results(two, seeds=(1, 2)), settings(), EXPERIMENTS)
    means = {name: np.mean([np.mean(h) for h in hits]) for name, hits in two.items()}
    for row in found.effects:
        contrasts = [c.split("-") for c in row["contrasts"].split(";")]
        assert row["effect"] == pytest.approx(np.mean([means[a] - means[b] for a, b in contrasts]))
        assert row["interval"] == TWO_LEVEL and row["test"] == BOTH_TESTS and row["n_seeds"] == "2"
        assert row["p_adjusted"] >= row["p_value"]
    # statistics.csv's primary rows and the effects share the primary family
    primary = [r for r in found.rows if r["family"] == PRIMARY and "p_value" in r]
    assert found.family_sizes[PRIMARY] == len(primary) + len(found.effects)


P_VALUES = [0.01, 0.04, 0.03, 0.005]


def test_holm_and_bh_equal_statsmodels_and_the_hand_computation():
    holm, holm_survives = adjusted_p_values(P_VALUES, "holm", 0.05)
    assert holm == pytest.approx(list(multipletests(P_VALUES, method="holm")[1]))
    # Holm by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_survives == [True, False, False, True]
    bh, bh_survives = adjusted_p_values(P_VALUES, "fdr_bh", 0.05)
    assert bh == pytest.approx(list(multipletests(P_VALUES, method="fdr_bh")[1]))
    assert bh == pytest.approx(list(stats.false_discovery_control(P_VALUES, method="bh")))
    # BH by hand: 0.005 x 4/1, 0.01 x 4/2, 0.03 x 4/3, 0.04 x 4/4 -> running min from the largest
    assert bh == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert bh_survives == [True, True, True, True]
    assert all(a >= p for a, p in zip(holm + bh, P_VALUES * 2))


def test_families_are_adjusted_apart():
    rows = [{"family": PRIMARY, "p_value": p} for p in P_VALUES]
    secondary = [{"family": SECONDARY, "p_value": 0.01}, {"family": SECONDARY, "p_value": 0.02},
                 {"family": SECONDARY}]  # untested: no p_adjusted
    sizes = adjust_families([rows, secondary], {"adjustment": "holm"})
    assert sizes == {PRIMARY: 4, SECONDARY: 2}
    assert [r["p_adjusted"] for r in rows] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [r["p_adjusted"] for r in secondary[:2]] == pytest.approx([0.02, 0.02])
    assert "p_adjusted" not in secondary[2]


def test_two_level_interval_is_wider_when_seeds_disagree_and_the_same_when_they_agree():
    rng = np.random.default_rng(0)
    seed_1 = (rng.random(60) < 0.5) * 100.0
    agree = np.stack([seed_1, seed_1])
    two_level = experiment_estimate(agree, "mean", settings())
    query_only = experiment_estimate(agree, "mean", settings(interval="queries"))
    assert two_level.interval == TWO_LEVEL and query_only.interval == QUERY_ONLY
    assert two_level.high - two_level.low == pytest.approx(query_only.high - query_only.low)
    # the second seed misses what the first hits and hits what it misses on half the queries
    disagree = np.stack([seed_1, np.where(np.arange(60) < 30, 100.0 - seed_1, seed_1) * 0.5])
    two_level = experiment_estimate(disagree, "mean", settings())
    query_only = experiment_estimate(disagree, "mean", settings(interval="queries"))
    assert two_level.value == query_only.value == pytest.approx(disagree.mean())
    assert two_level.high - two_level.low > 1.5 * (query_only.high - query_only.low)
    # a difference too: the seeds' disagreement widens it and weakens its test
    reference = np.stack([seed_1 * 0.0 + 40.0, seed_1 * 0.0 + 40.0])
    wide = contrast_estimate([(disagree, reference)], "mean", settings())
    narrow = contrast_estimate([(disagree, reference)], "mean", settings(interval="queries"))
    assert wide.high - wide.low > narrow.high - narrow.low and wide.p_value >= narrow.p_value


def test_a_handful_of_queries_never_makes_a_small_p_value():
    """Two videos, two seeds, one experiment ahead on both: every bootstrap resample is on one side of zero,
    but two sign flips allow no p-value under 0.5; the test reports the larger (the permutation's)."""
    ahead = np.array([[100.0, 75.0], [100.0, 75.0]])
    behind = np.array([[50.0, 25.0], [50.0, 50.0]])
    estimate = contrast_estimate([(ahead, behind)], "mean", settings())
    assert estimate.value == pytest.approx(87.5 - 43.75) and estimate.low > 0  # the interval excludes zero...
    assert estimate.test == BOTH_TESTS and estimate.p_value >= 0.5  # ...yet two queries prove little


def test_variance_components_and_the_minimum_detectable_difference():
    """d[s, q] = u_s + v_q exactly: the ANOVA finds u's and v's variances and no residual."""
    u = np.array([-3.0, 3.0])
    v = np.tile([-10.0, 10.0], 50)
    components = variance_components(u[:, None] + v[None, :])
    assert components.seed == pytest.approx(np.std(u, ddof=1))
    assert components.query == pytest.approx(np.std(v, ddof=1))
    assert components.residual == pytest.approx(0.0, abs=1e-9)
    z = stats.norm.ppf(1 - 0.01 / 2) + stats.norm.ppf(0.8)
    expected = z * math.sqrt(components.seed ** 2 / 2 + components.query ** 2 / 100)
    assert minimum_detectable(components, 0.01, 0.8, 2, 100) == pytest.approx(expected)
    # more seeds shrink the seed term, more queries the query term only
    assert minimum_detectable(components, 0.01, 0.8, 8, 100) == pytest.approx(
        z * math.sqrt(components.seed ** 2 / 8 + components.query ** 2 / 100))
    assert minimum_detectable(components, 0.01, 0.8, 2, 400) > z * components.seed / math.sqrt(2)
    # one seed: the seed variance is unknown, more seeds cannot be planned
    one = variance_components(v[None, :])
    assert math.isnan(one.seed) and one.query == pytest.approx(np.std(v, ddof=1))
    assert math.isnan(minimum_detectable(one, 0.01, 0.8, 2, 100))
    assert minimum_detectable(one, 0.01, 0.8, 1, 100) == pytest.approx(z * one.query / 10)


def test_power_rows_come_from_the_studys_comparisons():
    rng = np.random.default_rng(9)
    two = {name: [list(rng.choice([0, 100], 4)), list(rng.choice([0, 100], 4))] for name in HITS}
    found = study(results(two, seeds=(1, 2)), settings(planning_scales=[2, 4]), EXPERIMENTS)
    (row,) = found.power
    assert row["benchmark"] == "youcook2_retrieval" and row["metric"] == "recall_at_10"
    assert row["level"] == pytest.approx(0.05 / found.family_sizes[PRIMARY])
    assert row["n_seeds"] == 2 and row["n_queries"] == 4
    assert row["mdd_seeds_x4"] <= row["mdd_seeds_x2"] <= row["mdd"]
    assert row["mdd_queries_x4"] <= row["mdd_queries_x2"] <= row["mdd"]


def test_estimate_prints_a_finished_runs_planning_power(tmp_path, capsys):
    """`mcnflow estimate` keeps its cost table and, when results/power.csv exists, adds what the run could detect."""
    from mcnflow.cli import main as cli_main
    from mcnflow.report import write_csv
    from mcnflow.statistics import power_columns

    from conftest import REPO

    rng = np.random.default_rng(9)
    two = {name: [list(rng.choice([0, 100], 4)), list(rng.choice([0, 100], 4))] for name in HITS}
    found = study(results(two, seeds=(1, 2)), settings(), EXPERIMENTS)
    arguments = ["estimate", "--config", str(REPO / "config.yaml"), "--results", str(tmp_path),
                 "--profile", str(REPO / "profiles" / "local"), "--rates", str(tmp_path / "no-rates.yaml")]
    assert cli_main(arguments) == 0
    before = capsys.readouterr().out
    assert "minimum detectable difference" not in before  # no finished run: no planning section
    write_csv(tmp_path / "power.csv", found.power, power_columns(found.settings))
    assert cli_main(arguments) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(before)  # the estimate's own output first, unchanged
    (row,) = found.power
    planning = printed.split("minimum detectable difference")[1]
    assert "2x seeds" in planning and "4x queries" in planning
    line = next(text for text in planning.splitlines() if text.startswith("youcook2_retrieval"))
    assert line.split()[1:5] == ["recall_at_10", "2", "x", "4"]
    assert [float(v) for v in line.split()[5:]] == pytest.approx(
        [row[c] for c in ("mdd", "mdd_seeds_x2", "mdd_seeds_x4", "mdd_queries_x2", "mdd_queries_x4")], abs=0.006)
