"""Uncertainty for the study's comparisons: spread over seeds, bootstrap intervals over seeds and
queries, paired tests, pair effects, adjusted p-values and the smallest difference a run can detect.

The unit of resampling is the query (a YouCook2 step, an MSR-VTT sentence, a CrossTask or Mining
YouTube video): a benchmark's metric is an aggregate of per-query values (``R@K`` = 100 x the share
of queries ranked within K, ``MedR`` = the median rank, step recall = the mean of the videos'
recalls, ...). An experiment's values form a (seeds x queries) matrix over the queries every one of
its seeds scored; docs/statistics.md explains every estimator with a worked example.

Aggregates (the ``aggregate`` of each metric in a result's ``per_query``): ``mean``, ``median``, and
``group_mean`` (:data:`GROUP_MEAN`): the mean within each group, then over the groups (CrossTask: a
task's videos, then the tasks), with the query's group in ``per_query["groups"]``. The benchmark's
groups are fixed and its queries sampled, so a ``group_mean`` interval resamples the queries within
each group (a stratified bootstrap; a group of one query is held fixed).

Intervals (``statistics.interval``):

* ``seeds_and_queries`` (default): a two-level bootstrap. Each resample draws the seeds of every
  experiment with replacement, then the queries with replacement (one query draw shared by every
  experiment of a comparison, since all are scored on the same queries). It describes what another
  run with as many new seeds on as many new queries would give. An experiment with one seed keeps it.
  Its test: the larger of the two-sided bootstrap p-value of "no difference" (twice the smaller share
  of resampled differences on either side of zero) and the paired permutation test's below.
* ``queries``: the seeds are averaged per query first and only the queries are resampled: the
  interval describes these trained models on new queries. Its test: the paired permutation test
  (``scipy.stats.permutation_test``, ``permutation_type="samples"``: each query's pair of values is
  swapped or not).

With one seed both are the same query bootstrap and the permutation test.

* :func:`seed_summary`: mean and sample standard deviation of a metric over seeds.
* :func:`experiment_estimate` / :func:`contrast_estimate`: an experiment's metric, or the mean of
  paired differences over contrasts, with its interval and test (``scipy.stats.bootstrap``).
* :func:`study`: statistics.csv's rows, pair effects (:func:`pair_effect_rows`), Holm or
  Benjamini-Hochberg adjusted p-values per family (:func:`adjust_families`, statsmodels) and the
  planning power (:func:`power_rows`).

Settings: the config's ``statistics`` section (:func:`statistics_settings` fills the schema's
defaults for keys a hand-written settings JSON leaves out).
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from mcnflow.core.config import fill_defaults, load_schema
from mcnflow.core.frozen import thaw

AGGREGATES: dict[str, Callable[..., np.ndarray]] = {
    "mean": lambda x, axis=-1: np.mean(x, axis=axis),
    "median": lambda x, axis=-1: np.median(x, axis=axis),
}
GROUP_MEAN = "group_mean"  # mean within each group, then over groups (CrossTask: videos per task, then tasks)
LINEAR = ("mean", GROUP_MEAN)  # weighted sums of the per-query values: resampled by products, not look-ups
TWO_LEVEL = "seeds_and_queries"
QUERY_ONLY = "queries"
PAIRS = ("tv", "ta", "va")
SHARED = "shared"
OTHER_SPACES = ("per_pair", "fac")  # each compared with the shared space on the same pairs
PRIMARY, SECONDARY = "primary", "secondary"  # the two families of tests
BOOTSTRAP_TEST = "two-level bootstrap"
PERMUTATION_TEST = "paired permutation"
BOTH_TESTS = "two-level bootstrap and paired permutation (the larger p)"
PAIRS_KEY = "contrast_pairs"  # an effect row's (experiment, reference) names (not a csv column: names may hold '-')
CHUNK = 256  # resamples evaluated at once: bounds memory to CHUNK x queries values


@dataclass(frozen=True)
class SeedSummary:
    mean: float
    std: float  # sample standard deviation (ddof 1); nan with one seed
    n: int


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class Estimate:
    """A value with its interval and (for differences) its two-sided test of zero."""
    value: float
    low: float
    high: float
    p_value: float = math.nan
    test: str = ""
    interval: str = QUERY_ONLY  # which interval: TWO_LEVEL or QUERY_ONLY


def statistics_settings(settings: Mapping | None) -> dict:
    """The ``statistics`` settings with the config schema's defaults for the keys not given."""
    filled = thaw(dict(settings or {}))
    fill_defaults(filled, load_schema()["properties"]["statistics"])
    return filled


def seed_summary(values: Sequence[float]) -> SeedSummary:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return SeedSummary(math.nan, math.nan, 0)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return SeedSummary(float(np.mean(values)), std, len(values))


def _group_samples(data: np.ndarray, groups: Sequence[str] | None) -> list[np.ndarray]:
    """The values of each group, in first-seen order of the groups."""
    if groups is None or len(groups) != len(data) or any(g is None for g in groups):
        raise ValueError(f"aggregate {GROUP_MEAN} needs a group for every one of the {len(data)} values")
    labels = np.asarray([str(g) for g in groups])
    return [data[labels == label] for label in dict.fromkeys(labels.tolist())]


def aggregate_value(values: Sequence[float], aggregate: str, groups: Sequence[str] | None = None) -> float:
    """The metric that ``values`` (one per query) make under ``aggregate``."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return math.nan
    if aggregate == GROUP_MEAN:
        return float(np.mean([sample.mean() for sample in _group_samples(data, groups)]))
    return float(AGGREGATES[aggregate](data))


def group_weights(groups: Sequence[str], n: int) -> np.ndarray:
    """Each query's weight in a mean of group means: 1 / (groups x its group's size)."""
    samples = _group_samples(np.arange(n), groups)
    weights = np.zeros(n)
    for indices in samples:
        weights[indices] = 1.0 / (len(samples) * len(indices))
    return weights


# --- resampling: one machinery for intervals and tests ---------------------------------------------

def _rows(values: np.ndarray, aggregate: str, segments: Sequence[slice]) -> np.ndarray:
    """The aggregate of each row of ``values`` (resamples x queries); ``segments``: the columns of
    each group for ``group_mean``."""
    if aggregate == GROUP_MEAN:
        return np.mean([values[:, segment].mean(axis=1) for segment in segments], axis=0)
    return AGGREGATES[aggregate](values, axis=-1)


def _as_rows(samples: Sequence[np.ndarray]) -> list[np.ndarray]:
    """scipy hands a vectorized statistic resamples with leading batch dimensions (several for BCa's
    jackknife, broadcast against the unresampled samples): each as (resamples, size) indices."""
    batch = np.broadcast_shapes(*(s.shape[:-1] for s in samples)) if samples else ()
    return [np.broadcast_to(s, batch + s.shape[-1:]).reshape(-1, s.shape[-1]).astype(np.intp) for s in samples]


def _bootstrap(terms: Sequence[tuple[float, np.ndarray]], aggregate: str, settings: Mapping,
               groups: Sequence[str] | None, seed_level: bool) -> Estimate:
    """Sum over ``terms`` of weight x aggregate(the matrix's seed mean): its bootstrap interval and the
    two-sided bootstrap p-value of zero. Every matrix is (seeds x queries) on the same queries.
    ``seed_level``: each matrix with two or more seeds has them resampled too (scipy resamples each
    sample on its own: the query positions first, then each matrix's seed positions)."""
    n = terms[0][1].shape[1]
    confidence = float(settings["confidence"])
    value = float(sum(w * aggregate_value(m.mean(axis=0), aggregate, groups) for w, m in terms))
    blocks = _group_samples(np.arange(n), groups) if aggregate == GROUP_MEAN else [np.arange(n)]
    resampled = [b for b in blocks if b.size >= 2]
    fixed = np.asarray([b[0] for b in blocks if b.size == 1], dtype=np.intp)  # a group of one is itself
    seeded = [i for i, (_, m) in enumerate(terms) if seed_level and m.shape[0] >= 2]
    kind = TWO_LEVEL if seeded else QUERY_ONLY
    seed_means = [m.mean(axis=0) for _, m in terms]
    if not (resampled or seeded):
        return Estimate(value, value, value, math.nan, BOOTSTRAP_TEST, kind)  # nothing to resample
    if not any(np.ptp(m) > 0 for _, m in terms):
        # every value the same within each matrix: a point; a nonzero difference is as far from 0 as can be
        p_value = 1.0 if value == 0 else 2.0 / (int(settings["resamples"]) + 1)
        return Estimate(value, value, value, p_value, BOOTSTRAP_TEST, kind)

    def statistic(*samples, axis=-1):
        rows = _as_rows(samples)
        queries, seeds = rows[:len(resampled)], rows[len(resampled):]
        # each group's columns (BCa's jackknife hands one group a query fewer)
        bounds = np.cumsum([0, *(q.shape[1] for q in queries), *([1] * fixed.size)])
        segments = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        count = (queries or seeds)[0].shape[0]
        out = np.empty(count)
        if aggregate in LINEAR:
            # a mean (of group means) is a weighted sum: each drawn query weighs 1 / (groups x its group's draws)
            share = np.concatenate([np.full(q.shape[1], 1.0 / (len(segments) * q.shape[1])) for q in queries]
                                   + [np.full(fixed.size, 1.0 / len(segments))])
        for start in range(0, count, CHUNK):
            chunk = slice(start, start + CHUNK)
            size = min(CHUNK, count - start)
            columns = np.concatenate([*(q[chunk] for q in queries), np.broadcast_to(fixed, (size, fixed.size))],
                                     axis=1)
            if aggregate in LINEAR:
                # each query's total weight in each resample, then each seed's weighted sum: two products
                offsets = (columns + n * np.arange(size)[:, None]).ravel()
                weights = np.bincount(offsets, np.broadcast_to(share, columns.shape).ravel(), size * n)
                weights = weights.reshape(size, n)
            total = np.zeros(size)
            for i, (weight, matrix) in enumerate(terms):
                drawn = seeds[seeded.index(i)][chunk] if i in seeded else None
                if drawn is not None:
                    counts = (drawn[..., None] == np.arange(matrix.shape[0])).sum(axis=1) / drawn.shape[1]
                if aggregate in LINEAR and drawn is not None:
                    total += weight * np.sum((weights @ matrix.T) * counts, axis=1)
                elif aggregate in LINEAR:
                    total += weight * (weights @ seed_means[i])
                else:
                    means = counts @ matrix if drawn is not None else seed_means[i][None, :]
                    values = np.take_along_axis(np.broadcast_to(means, (size, n)), columns, axis=1)
                    total += weight * _rows(values, aggregate, segments)
            out[chunk] = total
        return out.reshape(np.broadcast_shapes(*(s.shape[:-1] for s in samples)))

    data = [b.astype(np.float64) for b in resampled]
    data += [np.arange(terms[i][1].shape[0], dtype=np.float64) for i in seeded]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # handled below: a point interval
        result = stats.bootstrap(tuple(data), statistic, confidence_level=confidence,
                                 n_resamples=int(settings["resamples"]), method=settings["method"], vectorized=True,
                                 rng=np.random.default_rng(settings["seed"]))
    distribution = np.asarray(result.bootstrap_distribution)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if np.ptp(distribution) == 0:
        low = high = float(distribution[0])
    elif not (math.isfinite(low) and math.isfinite(high)):
        # BCa's jackknife can be degenerate (every leave-one-out value equal): the percentile interval
        low, high = (float(x) for x in np.percentile(distribution, [50 * (1 - confidence), 50 * (1 + confidence)]))
    # the resampled differences on each side of zero (+1: the observed one), twice the smaller share
    below, above = int((distribution <= 0).sum()), int((distribution >= 0).sum())
    p_value = min(1.0, 2 * (min(below, above) + 1) / (distribution.size + 1))
    return Estimate(value, low, high, p_value, BOOTSTRAP_TEST, kind)


def _permutation_p(contrasts: Sequence[tuple[np.ndarray, np.ndarray]], aggregate: str, settings: Mapping,
                   groups: Sequence[str] | None) -> float:
    """Two-sided paired permutation p-value of mean_c [aggregate(a_c) - aggregate(b_c)] (seed-pooled
    vectors on the same queries): a permutation swaps, query by query, every contrast's two values.
    scipy permutes query positions; the statistic looks the values up."""
    n = contrasts[0][0].size
    if all(np.array_equal(a, b) for a, b in contrasts):
        return 1.0
    stacked = [np.concatenate([a, b]) for a, b in contrasts]
    weights = group_weights(groups, n) if aggregate == GROUP_MEAN else None

    def aggregate_rows(values):
        return values @ weights if weights is not None else AGGREGATES[aggregate](values, axis=-1)

    if aggregate in LINEAR:
        # a linear statistic: a swap flips the sign of the query's mean paired difference
        paired = np.mean([a - b for a, b in contrasts], axis=0) * (weights if weights is not None else 1.0 / n)

    def statistic(x, y, axis=-1):
        first, second = _as_rows([x, y])
        out = np.empty(first.shape[0])
        for start in range(0, first.shape[0], CHUNK):
            chunk = slice(start, start + CHUNK)
            if aggregate in LINEAR:
                out[chunk] = np.where(first[chunk] < n, 1.0, -1.0) @ paired
            else:
                out[chunk] = np.mean([aggregate_rows(z[first[chunk]]) - aggregate_rows(z[second[chunk]])
                                      for z in stacked], axis=0)
        return out.reshape(np.broadcast_shapes(x.shape[:-1], y.shape[:-1]))

    result = stats.permutation_test((np.arange(n, dtype=np.float64), np.arange(n, 2 * n, dtype=np.float64)),
                                    statistic, permutation_type="samples", vectorized=True,
                                    n_resamples=int(settings["resamples"]), alternative="two-sided",
                                    rng=np.random.default_rng(settings["seed"]))
    return float(result.pvalue)


def _seed_level(settings: Mapping, matrices: Sequence[np.ndarray]) -> bool:
    return settings["interval"] == TWO_LEVEL and any(m.shape[0] >= 2 for m in matrices)


def experiment_estimate(matrix: np.ndarray, aggregate: str, settings: Mapping,
                        groups: Sequence[str] | None = None) -> Estimate:
    """An experiment's metric (its seeds' mean per query, then the aggregate) with its interval;
    ``matrix``: (seeds x queries)."""
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    estimate = _bootstrap([(1.0, matrix)], aggregate, settings, groups, _seed_level(settings, [matrix]))
    return Estimate(estimate.value, estimate.low, estimate.high, interval=estimate.interval)


def contrast_estimate(contrasts: Sequence[tuple[np.ndarray, np.ndarray]], aggregate: str, settings: Mapping,
                      groups: Sequence[str] | None = None) -> Estimate:
    """The mean over ``contrasts`` (each ``(experiment, reference)``, two (seeds x queries) matrices on
    the same queries) of aggregate(experiment) - aggregate(reference), with its interval and test.
    The interval: the two-level bootstrap when seeds are resampled, else the query bootstrap. The test:
    the paired permutation test of the seed-pooled values; with seeds resampled, the larger of its p-value
    and the two-level bootstrap's (a difference must stand out from the seeds' variation and from the
    queries'; on a handful of queries every bootstrap resample can fall on one side of zero, so the
    bootstrap's p alone would be far too small, while the permutation test is exact there)."""
    pairs = [(np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64)))
             for a, b in contrasts]
    weight = 1.0 / len(pairs)
    terms = [term for a, b in pairs for term in ((weight, a), (-weight, b))]
    seed_level = _seed_level(settings, [m for pair in pairs for m in pair])
    estimate = _bootstrap(terms, aggregate, settings, groups, seed_level)
    p_value = _permutation_p([(a.mean(axis=0), b.mean(axis=0)) for a, b in pairs], aggregate, settings, groups)
    if estimate.interval == TWO_LEVEL:
        return Estimate(estimate.value, estimate.low, estimate.high, max(p_value, estimate.p_value), BOTH_TESTS,
                        TWO_LEVEL)
    return Estimate(estimate.value, estimate.low, estimate.high, p_value, PERMUTATION_TEST, QUERY_ONLY)


def bootstrap_interval(values: Sequence[float], aggregate: str, settings: Mapping,
                       groups: Sequence[str] | None = None) -> Interval:
    """Bootstrap interval of the aggregate of ``values`` (one per query) resampling the queries
    (within each group for ``group_mean``); ``settings``: confidence, resamples, method, seed."""
    data = np.asarray(values, dtype=np.float64)[None, :]
    estimate = _bootstrap([(1.0, data)], aggregate, settings, groups, seed_level=False)
    return Interval(estimate.low, estimate.high, float(settings["confidence"]))


def paired_test(experiment: Sequence[float], reference: Sequence[float], aggregate: str, settings: Mapping,
                groups: Sequence[str] | None = None) -> tuple[float, float]:
    """(aggregate(experiment) - aggregate(reference), two-sided paired permutation p-value) over
    paired queries; ``settings``: resamples, seed."""
    a = np.asarray(experiment, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    if a.size == 0:
        return math.nan, math.nan
    difference = aggregate_value(a, aggregate, groups) - aggregate_value(b, aggregate, groups)
    if np.array_equal(a, b):
        return 0.0, 1.0
    return difference, _permutation_p([(a, b)], aggregate, settings, groups)


def adjusted_p_values(p_values: Sequence[float], method: str, alpha: float) -> tuple[list[float], list[bool]]:
    """Holm (``holm``) or Benjamini-Hochberg (``fdr_bh``) adjusted p-values of one family, and which
    tests survive at ``alpha`` (statsmodels' multipletests)."""
    from statsmodels.stats.multitest import multipletests
    if not len(p_values):
        return [], []
    reject, adjusted, _, _ = multipletests(np.asarray(p_values, dtype=np.float64), alpha=alpha, method=method)
    return [float(p) for p in adjusted], [bool(r) for r in reject]


# --- the study's tables ------------------------------------------------------------------------------

STAT_COLUMNS = ("benchmark", "experiment", "metric", "aggregate", "n_seeds", "mean", "std", "ci_low", "ci_high",
                "confidence", "interval", "n_queries", "reference", "difference", "diff_low", "diff_high", "p_value",
                "test", "family", "p_adjusted", "survives")
EFFECT_COLUMNS = ("benchmark", "metric", "kind", "pair", "effect", "ci_low", "ci_high", "p_value", "p_adjusted",
                  "survives", "family", "test", "interval", "confidence", "n_contrasts", "contrasts", "n_queries",
                  "n_seeds")
POWER_COLUMNS = ("benchmark", "metric", "n_seeds", "n_queries", "n_comparisons", "sd_seed", "sd_query",
                 "sd_residual", "level", "power", "mdd")


def per_query(record: Mapping) -> dict[str, dict[str, float]]:
    """metric -> {query key: value} of one evaluation record (empty when it has none)."""
    data = record.get("per_query") or {}
    keys = data.get("keys") or []
    return {metric: dict(zip(keys, map(float, values))) for metric, values in (data.get("values") or {}).items()}


def query_groups(records: Sequence[Mapping]) -> dict[str, str]:
    """query key -> its group (``per_query["groups"]``; empty when the records have none)."""
    groups: dict[str, str] = {}
    for record in records:
        data = record.get("per_query") or {}
        groups.update(zip(data.get("keys") or [], map(str, data.get("groups") or [])))
    return groups


def aggregate_of(records: Sequence[Mapping], metric: str) -> str:
    for record in records:
        name = ((record.get("per_query") or {}).get("aggregate") or {}).get(metric)
        if name:
            return name
    return "mean"


@dataclass
class Scores:
    """One experiment's per-query values of one metric on one benchmark, over its seeds."""
    seeds: list[Any]
    values: list[dict[str, float]]  # per seed: query key -> value

    def keys(self) -> list[str]:
        """The queries every seed scored, in the first seed's order."""
        common = set.intersection(*(set(v) for v in self.values)) if self.values else set()
        return [k for k in self.values[0] if k in common] if self.values else []

    def matrix(self, keys: Sequence[str]) -> np.ndarray:
        return np.asarray([[v[k] for k in keys] for v in self.values], dtype=np.float64)


def scores_of(records: Sequence[Mapping], metric: str) -> Scores | None:
    per_seed = [(r.get("seed", i), per_query(r).get(metric)) for i, r in enumerate(records)]
    per_seed = [(seed, values) for seed, values in per_seed if values]
    return Scores([s for s, _ in per_seed], [v for _, v in per_seed]) if per_seed else None


def common_keys(scores: Sequence[Scores]) -> list[str]:
    """The queries every seed of every one of ``scores`` scored, in the first one's order."""
    keys = scores[0].keys()
    for other in scores[1:]:
        present = set(other.keys())
        keys = [k for k in keys if k in present]
    return keys


def primary_metric(task: str, settings: Mapping) -> str | None:
    return (settings.get("primary_metric") or {}).get(task)


@dataclass(frozen=True)
class Design:
    """What an experiment trains: its pairs, its space and everything else (seeds aside)."""
    pairs: frozenset
    space: str
    rest: str  # canonical JSON of every other setting (losses, va_space of fac, training overrides)


def experiment_designs(results: Sequence[Mapping], experiments: Mapping | None) -> dict[str, Design]:
    """Each experiment's design: from the config's experiment entries when the settings carry them
    (``experiments``), else from the results' ``pairs`` and ``space``."""
    designs = {}
    for record in results:
        name = record["experiment"]
        entry = thaw((experiments or {}).get(name) or {})
        pairs = frozenset(entry.pop("pairs", None) or record.get("pairs") or ())
        space = entry.pop("space", None) or record.get("space") or SHARED
        entry.pop("seeds", None)
        if space != "fac":
            entry.pop("va_space", None)  # only fac spaces read it
        designs[name] = Design(pairs, space, json.dumps(entry, sort_keys=True))
    return designs


def pair_contrasts(designs: Mapping[str, Design], scored: Sequence[str]) -> list[tuple[str, str, str, list]]:
    """(kind, label, contrasts) of every effect the design allows among the ``scored`` experiments:
    adding each pair (experiments equal but for that pair) and each space against the shared one on
    the same pairs; ``contrasts``: (experiment, reference) names, sorted."""
    effects = []
    for pair in PAIRS:
        contrasts = sorted((a, b) for a in scored for b in scored
                           if pair in designs[a].pairs and designs[b].pairs == designs[a].pairs - {pair}
                           and designs[a].space == designs[b].space and designs[a].rest == designs[b].rest)
        effects.append(("pair", pair, contrasts))
    for space in OTHER_SPACES:
        contrasts = sorted((a, b) for a in scored for b in scored
                           if designs[a].space == space and designs[b].space == SHARED
                           and designs[a].pairs == designs[b].pairs
                           and _without_va_space(designs[a].rest) == designs[b].rest)
        effects.append(("space", f"{space} vs {SHARED}", contrasts))
    return [(kind, label, contrasts) for kind, label, contrasts in effects if contrasts]


def _without_va_space(rest: str) -> str:
    entry = json.loads(rest)
    entry.pop("va_space", None)
    return json.dumps(entry, sort_keys=True)


def _n_seeds(counts: Sequence[int]) -> str:
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"


@dataclass
class Study:
    """Everything summarize writes about uncertainty."""
    rows: list[dict] = field(default_factory=list)  # statistics.csv
    effects: list[dict] = field(default_factory=list)  # pair_effects.csv
    power: list[dict] = field(default_factory=list)  # power.csv
    settings: dict = field(default_factory=dict)
    primary: dict[str, str] = field(default_factory=dict)  # benchmark -> its primary metric
    family_sizes: dict[str, int] = field(default_factory=dict)


def _cells(results: Sequence[Mapping]) -> dict[tuple[str, str], list[Mapping]]:
    by_cell: dict[tuple[str, str], list[Mapping]] = {}
    for record in results:
        if record.get("metrics"):
            by_cell.setdefault((record["benchmark"], record["experiment"]), []).append(record)
    return by_cell


def study_rows(results: Sequence[Mapping], settings: Mapping | None,
               primary: Mapping[str, str] | None = None) -> list[dict]:
    """Mean +- std over seeds, the interval of the metric and the test against ``settings["reference"]``,
    for every benchmark, experiment and metric (p_adjusted: :func:`adjust_families`)."""
    settings = statistics_settings(settings)
    reference = settings["reference"]
    rows = []
    by_cell = _cells(results)
    for (benchmark, experiment), records in sorted(by_cell.items()):
        metrics = list(dict.fromkeys(name for r in records for name in r["metrics"]))
        reference_records = by_cell.get((benchmark, reference), []) if reference else []
        groups = query_groups([*records, *reference_records])
        for metric in metrics:
            spread = seed_summary([r["metrics"].get(metric) for r in records])
            aggregate = aggregate_of(records, metric)
            row = {"benchmark": benchmark, "experiment": experiment, "metric": metric, "aggregate": aggregate,
                   "n_seeds": spread.n, "mean": spread.mean, "std": spread.std,
                   "confidence": settings["confidence"], "n_queries": 0,
                   "reference": reference if reference_records and experiment != reference else "",
                   "family": PRIMARY if (primary or {}).get(benchmark) == metric else SECONDARY}
            scores = scores_of(records, metric)
            if scores is not None:
                keys = scores.keys()
                labels = [groups.get(k) for k in keys] if aggregate == GROUP_MEAN else None
                if keys:
                    estimate = experiment_estimate(scores.matrix(keys), aggregate, settings, labels)
                    row.update(ci_low=estimate.low, ci_high=estimate.high, interval=estimate.interval,
                               n_queries=len(keys))
            base = scores_of(reference_records, metric) if row["reference"] else None
            if scores is not None and base is not None:
                keys = common_keys([scores, base])
                if keys:
                    labels = [groups.get(k) for k in keys] if aggregate == GROUP_MEAN else None
                    estimate = contrast_estimate([(scores.matrix(keys), base.matrix(keys))], aggregate, settings,
                                                 labels)
                    row.update(difference=estimate.value, diff_low=estimate.low, diff_high=estimate.high,
                               p_value=estimate.p_value, test=estimate.test)
            rows.append(row)
    return rows


def primary_scores(results: Sequence[Mapping], primary: Mapping[str, str]):
    """(benchmark, its primary metric, {experiment: per-query scores}) of every benchmark with a primary metric."""
    by_cell = _cells(results)
    for benchmark in sorted({b for b, _ in by_cell}):
        metric = primary.get(benchmark)
        if metric is None:
            continue
        scores = {e: scores_of(records, metric) for (b, e), records in by_cell.items() if b == benchmark}
        yield benchmark, metric, {e: s for e, s in scores.items() if s is not None}


def pair_effect_rows(results: Sequence[Mapping], settings: Mapping | None, primary: Mapping[str, str],
                     experiments: Mapping | None = None) -> list[dict]:
    """Per benchmark, on its primary metric: the effect of adding each pair (and of each space against
    the shared one), the mean over its contrasts of the paired difference, with interval and test."""
    settings = statistics_settings(settings)
    designs = experiment_designs(results, experiments)
    by_cell = _cells(results)
    rows = []
    for benchmark, metric, scores in primary_scores(results, primary):
        for kind, label, contrasts in pair_contrasts(designs, sorted(scores)):
            names = list(dict.fromkeys(name for contrast in contrasts for name in contrast))
            keys = common_keys([scores[name] for name in names])
            if not keys:
                continue
            records = [r for (b, e), rs in by_cell.items() if b == benchmark and e in names for r in rs]
            aggregate = aggregate_of(records, metric)
            groups = query_groups(records)
            labels = [groups.get(k) for k in keys] if aggregate == GROUP_MEAN else None
            estimate = contrast_estimate([(scores[a].matrix(keys), scores[b].matrix(keys)) for a, b in contrasts],
                                         aggregate, settings, labels)
            rows.append({"benchmark": benchmark, "metric": metric, "kind": kind, "pair": label,
                         "effect": estimate.value, "ci_low": estimate.low, "ci_high": estimate.high,
                         "p_value": estimate.p_value, "family": PRIMARY, "test": estimate.test,
                         "interval": estimate.interval, "confidence": settings["confidence"],
                         "n_contrasts": len(contrasts), "contrasts": ";".join(f"{a}-{b}" for a, b in contrasts),
                         "n_queries": len(keys), "n_seeds": _n_seeds([len(scores[n].seeds) for n in names]),
                         PAIRS_KEY: contrasts})
    return rows


def adjust_families(tables: Sequence[Sequence[dict]], settings: Mapping) -> dict[str, int]:
    """``p_adjusted`` and ``survives`` for every tested row of ``tables``, adjusted within its
    ``family`` (every test of a primary metric; every test of a secondary one); returns the families'
    sizes."""
    settings = statistics_settings(settings)
    sizes = {}
    for family in (PRIMARY, SECONDARY):
        tested = [row for table in tables for row in table
                  if row.get("family") == family and _finite(row.get("p_value"))]
        adjusted, survives = adjusted_p_values([row["p_value"] for row in tested], settings["adjustment"],
                                               float(settings["alpha"]))
        for row, p, ok in zip(tested, adjusted, survives):
            row["p_adjusted"], row["survives"] = p, ok
        sizes[family] = len(tested)
    return sizes


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# --- planning power --------------------------------------------------------------------------------

@dataclass(frozen=True)
class VarianceComponents:
    """Of a paired difference d[seed, query] = delta + u_seed + v_query + w_seed,query (seeds and
    queries crossed: every seed scores every query): the standard deviations of u, v and w."""
    seed: float  # nan with one seed
    query: float
    residual: float  # nan with one seed (then ``query`` holds v and w together)
    n_seeds: int
    n_queries: float  # the effective number of queries (a mean of group means: 1 / sum of squared weights)

    def standard_error(self, seeds: float, queries: float) -> float:
        residual = 0.0 if math.isnan(self.residual) else self.residual ** 2 / (seeds * queries)
        return math.sqrt(self.seed ** 2 / seeds + self.query ** 2 / queries + residual)


def variance_components(difference: np.ndarray, weights: np.ndarray | None = None) -> VarianceComponents:
    """Method-of-moments (two-way ANOVA without replication) estimates of the seed, query and residual
    variances of a (seeds x queries) matrix of paired differences; negative estimates count as 0."""
    d = np.atleast_2d(np.asarray(difference, dtype=np.float64))
    k, n = d.shape
    n_eff = 1.0 / float(np.sum(weights ** 2)) if weights is not None else float(n)
    if k == 1 or n < 2:
        query = float(np.std(d[0], ddof=1)) if n >= 2 else math.nan
        return VarianceComponents(math.nan, query, math.nan, k, n_eff)
    grand = d.mean()
    seed_means, query_means = d.mean(axis=1), d.mean(axis=0)
    ms_seed = n * np.sum((seed_means - grand) ** 2) / (k - 1)
    ms_query = k * np.sum((query_means - grand) ** 2) / (n - 1)
    ms_residual = np.sum((d - seed_means[:, None] - query_means[None, :] + grand) ** 2) / ((k - 1) * (n - 1))
    return VarianceComponents(math.sqrt(max(0.0, (ms_seed - ms_residual) / n)),
                              math.sqrt(max(0.0, (ms_query - ms_residual) / k)),
                              math.sqrt(ms_residual), k, n_eff)


def minimum_detectable(components: VarianceComponents, level: float, power: float, seeds: float,
                       queries: float) -> float:
    """The smallest true difference a two-sided test at ``level`` detects with probability ``power``
    (normal approximation: (z_{1-level/2} + z_power) x the standard error at ``seeds`` x ``queries``)."""
    if math.isnan(components.query) or (seeds != components.n_seeds and math.isnan(components.seed)):
        return math.nan
    seed_part = 0.0 if math.isnan(components.seed) else components.seed
    pooled = VarianceComponents(seed_part, components.query, components.residual, components.n_seeds,
                                components.n_queries)
    error = pooled.standard_error(seeds, queries)
    if error == 0:
        return math.nan  # no difference varied at all (e.g. every experiment at 100): nothing to plan from
    z = stats.norm.ppf(1 - level / 2) + stats.norm.ppf(power)
    return float(z * error)


def _paired_seeds(a: Scores, b: Scores, keys: Sequence[str]) -> np.ndarray:
    """(seeds x queries) differences a - b, seeds paired by seed number where both have it, else in order."""
    shared = [s for s in a.seeds if s in b.seeds]
    if shared:
        rows = [(a.values[a.seeds.index(s)], b.values[b.seeds.index(s)]) for s in shared]
    else:
        rows = list(zip(a.values, b.values))
    return np.asarray([[x[k] - y[k] for k in keys] for x, y in rows], dtype=np.float64)


def power_rows(results: Sequence[Mapping], settings: Mapping | None, primary: Mapping[str, str],
               effects: Sequence[Mapping], family_size: int) -> list[dict]:
    """Per benchmark's primary metric: the variance components of the paired differences of the
    study's comparisons (pair-effect contrasts and every experiment against the reference), averaged,
    and the minimum detectable difference now and with ``planning_scales`` times the seeds or queries."""
    settings = statistics_settings(settings)
    level = float(settings["alpha"]) / max(family_size, 1)  # Bonferroni: Holm's first step, BH's strictest
    by_cell = _cells(results)
    rows = []
    for benchmark, metric, scores in primary_scores(results, primary):
        comparisons = {tuple(c) for row in effects if row["benchmark"] == benchmark for c in row[PAIRS_KEY]}
        reference = settings["reference"]
        comparisons |= {(e, reference) for e in scores if reference in scores and e != reference}
        comparisons = sorted(c for c in comparisons if c[0] in scores and c[1] in scores)
        records = [r for (b, _), rs in by_cell.items() if b == benchmark for r in rs]
        aggregate = aggregate_of(records, metric)
        if not comparisons or aggregate not in ("mean", GROUP_MEAN):
            continue  # the normal approximation is of a mean
        groups = query_groups(records)
        found = []
        for a, b in comparisons:
            keys = common_keys([scores[a], scores[b]])
            if len(keys) < 2:
                continue
            weights = group_weights([groups.get(k) for k in keys], len(keys)) if aggregate == GROUP_MEAN else None
            found.append(variance_components(_paired_seeds(scores[a], scores[b], keys), weights))
        if not found:
            continue
        pooled = VarianceComponents(*(_rms([getattr(c, name) for c in found]) for name in ("seed", "query",
                                                                                          "residual")),
                                    min(c.n_seeds for c in found), min(c.n_queries for c in found))
        power = float(settings["power"])
        row = {"benchmark": benchmark, "metric": metric, "n_seeds": pooled.n_seeds,
               "n_queries": round(pooled.n_queries, 1), "n_comparisons": len(found), "sd_seed": pooled.seed,
               "sd_query": pooled.query, "sd_residual": pooled.residual, "level": level, "power": power,
               "mdd": minimum_detectable(pooled, level, power, pooled.n_seeds, pooled.n_queries)}
        for scale in settings["planning_scales"]:
            row[f"mdd_seeds_x{scale}"] = minimum_detectable(pooled, level, power, pooled.n_seeds * scale,
                                                            pooled.n_queries)
            row[f"mdd_queries_x{scale}"] = minimum_detectable(pooled, level, power, pooled.n_seeds,
                                                              pooled.n_queries * scale)
        rows.append(row)
    return rows


def power_columns(settings: Mapping | None) -> list[str]:
    settings = statistics_settings(settings)
    scaled = [f"mdd_{what}_x{scale}" for what in ("seeds", "queries") for scale in settings["planning_scales"]]
    return [*POWER_COLUMNS, *scaled]


def _rms(values: Sequence[float]) -> float:
    """Variances average, not standard deviations: the root of the mean square (nan if any is nan)."""
    return float(math.sqrt(np.mean(np.square(values))))


def study(results: Sequence[Mapping], settings: Mapping | None, experiments: Mapping | None = None) -> Study:
    """statistics.csv's rows, the pair effects, adjusted p-values (primary and secondary families) and
    the planning power of a set of evaluation results."""
    settings = statistics_settings(settings)
    primary = {}
    for record in results:
        metric = primary_metric(record.get("task", ""), settings)
        if metric and metric in (record.get("metrics") or {}):
            primary.setdefault(record["benchmark"], metric)
    rows = study_rows(results, settings, primary)
    effects = pair_effect_rows(results, settings, primary, experiments)
    sizes = adjust_families([rows, effects], settings)
    power = power_rows(results, settings, primary, effects, sizes[PRIMARY])
    return Study(rows, effects, power, settings, primary, sizes)


def read_power(path: str | Path) -> list[dict[str, str]]:
    """power.csv's rows (empty when there is none)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))
