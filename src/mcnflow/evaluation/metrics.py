"""Retrieval ranks and metrics, with an explicit policy for tied scores.

MCN's ``metrics.py`` locates the target with ``np.where(sorted - diag == 0)``: a tie gives the
query several ranks. Here a rank is always one number per query, chosen by ``tie_policy``:

- ``optimistic``: 1 + the number of candidates scoring strictly higher than the target;
- ``pessimistic``: the number of candidates scoring higher than or equal to the target (itself included);
- ``average``: the mean of the two (what Everything-at-Once reports), so a tie of the target with
  ``n`` others costs ``n / 2`` places.

Ranks are 1-based. A query that could not be scored (its clip has no features, or lacks a modality
the scoring needs) is a failure: it is never a hit for R@K (MCN divides MSR-VTT's R@K by 1000
although only 968 clips have audio), and it enters the median and mean rank with the worst rank,
the number of clips of the full benchmark.

Metrics are in percent (R@K), and in rank units (median and mean rank), as in the papers' tables.

Every benchmark reports two conventions for queries that cannot be scored (:data:`CONVENTIONS`):
``present`` ranks among the clips present and averages over the queries present (MCN's YouCook2
set has only clips with features; its CrossTask loader only videos with features); ``failures``
counts them as failures as described above (MCN's MSR-VTT divides R@K by all 1,000 queries).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

TIE_POLICIES = ("average", "optimistic", "pessimistic")
RECALL_KS = (1, 5, 10)
PRESENT, FAILURES = "present", "failures"
CONVENTIONS = {
    PRESENT: "ranked among the clips present, averaged over the queries present (MCN's YouCook2)",
    FAILURES: "queries without features count as failures (MCN's MSR-VTT: R@K over all 1,000 queries)",
}


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r}; allowed values: {', '.join(CONVENTIONS)}")
    return convention


def recall_key(k: int) -> str:
    return f"recall_at_{k}"


def target_ranks(similarity: np.ndarray, targets: Sequence[int], tie_policy: str) -> np.ndarray:
    """1-based rank of ``targets[i]`` in row ``i`` of ``similarity`` (queries x candidates), higher is better."""
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy {tie_policy!r}; allowed values: {', '.join(TIE_POLICIES)}")
    similarity = np.asarray(similarity, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if similarity.ndim != 2 or similarity.shape[0] != len(targets):
        raise ValueError(f"similarity {similarity.shape} does not match {len(targets)} targets")
    if np.isnan(similarity).any():
        raise ValueError("similarity contains NaN: the model produced invalid embeddings")
    target_scores = similarity[np.arange(len(targets)), targets][:, None]
    higher = (similarity > target_scores).sum(axis=1)
    equal = (similarity == target_scores).sum(axis=1)  # includes the target itself
    optimistic = higher + 1.0
    pessimistic = (higher + equal).astype(np.float64)
    if tie_policy == "optimistic":
        return optimistic
    if tie_policy == "pessimistic":
        return pessimistic
    return (optimistic + pessimistic) / 2.0


def retrieval_metrics(ranks: Iterable[float], n_missing: int = 0, worst_rank: float | None = None,
                      ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """R@K (percent), median and mean rank over the scored ``ranks`` plus ``n_missing`` failures.

    ``worst_rank`` is the rank a missing query gets; by default the size of the full benchmark
    (scored + missing queries, one candidate clip each).
    """
    ranks = np.asarray(list(ranks), dtype=np.float64)
    n_total = len(ranks) + int(n_missing)
    if n_total == 0:
        return {}
    if worst_rank is None:
        worst_rank = float(n_total)
    all_ranks = np.concatenate([ranks, np.full(int(n_missing), float(worst_rank))])
    # a missing query is never a hit, even when the benchmark is smaller than K
    metrics = {recall_key(k): 100.0 * float((ranks <= k).sum()) / n_total for k in ks}
    metrics["median_rank"] = float(np.median(all_ranks))
    metrics["mean_rank"] = float(np.mean(all_ranks))
    return metrics


def retrieval_conventions(ranks: Iterable[float], n_missing: int, worst_rank: float | None = None,
                          ks: Sequence[int] = RECALL_KS) -> dict[str, dict[str, float]]:
    """Both conventions: ``present`` (the scored ranks alone) and ``failures`` (``n_missing`` misses)."""
    ranks = np.asarray(list(ranks), dtype=np.float64)
    return {PRESENT: retrieval_metrics(ranks, ks=ks),
            FAILURES: retrieval_metrics(ranks, n_missing=n_missing, worst_rank=worst_rank, ks=ks)}


def chance_recall(k: int, n_candidates: int) -> float:
    """R@K (percent) of a random ranking over ``n_candidates`` clips."""
    return 100.0 * min(k, n_candidates) / n_candidates if n_candidates else float("nan")
