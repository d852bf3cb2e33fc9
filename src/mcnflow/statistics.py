"""Uncertainty for the study's comparisons: spread over seeds, bootstrap intervals over queries, and
paired tests between experiments on the same queries.

The unit of resampling is the query (a YouCook2 step, an MSR-VTT sentence, a CrossTask video): a
benchmark's metric is an aggregate of per-query values (``R@K`` = 100 x the share of queries ranked
within K, ``MedR`` = the median rank, ...). Seeds are pooled per query first (the mean of the
query's values over the seeds), so the interval and the test describe the experiment, not one run.

* :func:`seed_summary`: mean and sample standard deviation of a metric over seeds.
* :func:`bootstrap_interval`: percentile (or BCa) bootstrap confidence interval over queries
  (``scipy.stats.bootstrap``).
* :func:`paired_test`: two-sided paired permutation test of "experiment minus reference" on the
  same queries (``scipy.stats.permutation_test``, ``permutation_type="samples"``: each query's pair
  of values is swapped or not), for the metric's aggregate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

AGGREGATES: dict[str, Callable[..., np.ndarray]] = {
    "mean": lambda x, axis=-1: np.mean(x, axis=axis),
    "median": lambda x, axis=-1: np.median(x, axis=axis),
}


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


def seed_summary(values: Sequence[float]) -> SeedSummary:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return SeedSummary(math.nan, math.nan, 0)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return SeedSummary(float(np.mean(values)), std, len(values))


def pool_seeds(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """query key -> mean of its value over the seeds that scored it."""
    sums: dict[str, list[float]] = {}
    for values in per_seed.values():
        for key, value in values.items():
            sums.setdefault(key, []).append(float(value))
    return {key: float(np.mean(v)) for key, v in sums.items()}


def bootstrap_interval(values: Sequence[float], aggregate: str = "mean", confidence: float = 0.95,
                       resamples: int = 9999, seed: int = 0, method: str = "percentile") -> Interval:
    """Bootstrap interval of ``aggregate(values)`` resampling the queries."""
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2 or np.all(data == data[0]):
        value = float(AGGREGATES[aggregate](data)) if data.size else math.nan
        return Interval(value, value, confidence)  # no spread to resample
    result = stats.bootstrap((data,), AGGREGATES[aggregate], confidence_level=confidence, n_resamples=resamples,
                             method=method, vectorized=True, rng=np.random.default_rng(seed))
    return Interval(float(result.confidence_interval.low), float(result.confidence_interval.high), confidence)


def paired_test(experiment: Sequence[float], reference: Sequence[float], aggregate: str = "mean",
                resamples: int = 9999, seed: int = 0) -> tuple[float, float]:
    """(aggregate(experiment) - aggregate(reference), two-sided p-value) over paired queries."""
    a = np.asarray(experiment, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.shape} vs {b.shape}")
    function = AGGREGATES[aggregate]

    def difference(x, y, axis=-1):
        return function(x, axis=axis) - function(y, axis=axis)

    observed = float(difference(a, b))
    if a.size == 0:
        return math.nan, math.nan
    if np.array_equal(a, b):
        return 0.0, 1.0
    result = stats.permutation_test((a, b), difference, permutation_type="samples", vectorized=True,
                                    n_resamples=resamples, alternative="two-sided", rng=np.random.default_rng(seed))
    return observed, float(result.pvalue)


def paired_values(experiment: Mapping[str, float], reference: Mapping[str, float]) -> tuple[list[float], list[float]]:
    """The two experiments' values on the queries both scored, in one order."""
    keys = sorted(set(experiment) & set(reference))
    return [experiment[k] for k in keys], [reference[k] for k in keys]


# --- the study's table: one row per (benchmark, experiment, metric) -------------------------------------

STAT_COLUMNS = ("benchmark", "experiment", "metric", "n_seeds", "mean", "std", "ci_low", "ci_high", "confidence",
                "n_queries", "reference", "difference", "p_value")


def per_query(record: Mapping) -> dict[str, dict[str, float]]:
    """metric -> {query key: value} of one evaluation record (empty when it has none)."""
    data = record.get("per_query") or {}
    keys = data.get("keys") or []
    return {metric: dict(zip(keys, map(float, values))) for metric, values in (data.get("values") or {}).items()}


def aggregate_of(records: Sequence[Mapping], metric: str) -> str:
    for record in records:
        name = ((record.get("per_query") or {}).get("aggregate") or {}).get(metric)
        if name:
            return name
    return "mean"


def study_rows(results: Sequence[Mapping], settings: Mapping) -> list[dict]:
    """Mean +- std over seeds, the bootstrap interval over queries (seeds pooled per query) and the
    paired test against ``settings["reference"]``, for every benchmark, experiment and metric."""
    confidence, resamples = settings.get("confidence", 0.95), settings.get("resamples", 9999)
    method, seed, reference = settings.get("method", "percentile"), settings.get("seed", 0), settings.get("reference")
    rows = []
    by_cell: dict[tuple[str, str], list[Mapping]] = {}
    for record in results:
        if record.get("metrics"):
            by_cell.setdefault((record["benchmark"], record["experiment"]), []).append(record)
    for (benchmark, experiment), records in sorted(by_cell.items()):
        metrics = list(dict.fromkeys(name for r in records for name in r["metrics"]))
        reference_records = by_cell.get((benchmark, reference), []) if reference else []
        for metric in metrics:
            spread = seed_summary([r["metrics"].get(metric) for r in records])
            aggregate = aggregate_of(records, metric)
            pooled = pool_seeds({r.get("seed", i): per_query(r).get(metric, {}) for i, r in enumerate(records)})
            row = {"benchmark": benchmark, "experiment": experiment, "metric": metric, "n_seeds": spread.n,
                   "mean": spread.mean, "std": spread.std, "confidence": confidence, "n_queries": len(pooled),
                   "reference": reference if reference_records and experiment != reference else ""}
            if pooled:
                interval = bootstrap_interval(list(pooled.values()), aggregate, confidence, resamples, seed, method)
                row.update(ci_low=interval.low, ci_high=interval.high)
            if row["reference"]:
                base = pool_seeds({r.get("seed", i): per_query(r).get(metric, {})
                                   for i, r in enumerate(reference_records)})
                a, b = paired_values(pooled, base)
                if a:
                    row["difference"], row["p_value"] = paired_test(a, b, aggregate, resamples, seed)
            rows.append(row)
    return rows
