"""Temporal localization of a step sentence in its full video, decoded from a similarity curve.

**mcnflow's own protocol, not MCN's**: MCN evaluates localization as step recall on CrossTask and
Mining YouTube (:mod:`mcnflow.evaluation.crosstask`); this YouCook2 IoU benchmark is an extra one,
labelled ``protocol: mcnflow`` in its results (:data:`PROTOCOL`).

The model gives one similarity per second: the sentence against the clip ``[i, i+1)`` of the video
(scored as in retrieval, see :mod:`mcnflow.evaluation.scoring`). No paper defines an IoU decoder
for MCN, so this one is deliberately simple and documented:

1. **Smooth**: moving average over ``smoothing`` seconds, centred; at the ends of the video the
   window is cut to the seconds that exist (no zero padding, so edges are not pulled down).
2. **Threshold**: keep the seconds whose smoothed score is at least
   ``min + threshold * (max - min)`` of the smoothed curve.
3. **Pick**: the contiguous run of kept seconds that contains the argmax of the smoothed curve
   (the first argmax on ties) is the prediction ``[first second, last second + 1)``, clipped to the
   video's duration when it is known.

A flat curve keeps every second, i.e. predicts the whole video.

Metrics: temporal IoU of prediction and annotation per query; ``mean_iou`` (percent) and
``recall_at_iou_<t>`` (percent of queries with IoU >= t) for each configured threshold ``t``.
Convention ``failures``: a query that could not be scored has IoU 0; ``present``: it is left out.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from mcnflow.evaluation.core import EvalFeatures, Outcome, Query, embed_queries, embed_seconds, query_key
from mcnflow.evaluation.metrics import FAILURES, PRESENT
from mcnflow.evaluation.scoring import Scoring, similarity

PROTOCOL = "mcnflow"  # not an MCN protocol: see the module doc


def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` samples, averaging only the samples inside the curve."""
    curve = np.asarray(curve, dtype=np.float64)
    if window < 1:
        raise ValueError(f"smoothing window must be >= 1, got {window}")
    if window == 1 or len(curve) == 0:
        return curve.copy()
    kernel = np.ones(int(window))
    # sample i averages curve[i - before : i + after + 1]; an even window reaches one further back
    before = window // 2
    after = window - 1 - before
    padded = np.concatenate([np.zeros(before), curve, np.zeros(after)])
    ones = np.concatenate([np.zeros(before), np.ones(len(curve)), np.zeros(after)])
    sums = np.convolve(padded, kernel, mode="valid")
    counts = np.convolve(ones, kernel, mode="valid")
    return sums / counts


def decode_interval(curve: np.ndarray, smoothing: int, threshold: float,
                    duration: float | None = None) -> tuple[float, float]:
    """The predicted ``(start, end)`` in seconds for a per-second similarity ``curve`` (see module doc)."""
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 1 or len(curve) == 0:
        raise ValueError(f"a localization curve must be 1-D and non-empty, got shape {curve.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    smoothed = smooth(curve, smoothing)
    low, high = float(smoothed.min()), float(smoothed.max())
    level = low + threshold * (high - low)
    keep = smoothed >= level
    peak = int(np.argmax(smoothed))
    first = peak
    while first > 0 and keep[first - 1]:
        first -= 1
    last = peak
    while last < len(curve) - 1 and keep[last + 1]:
        last += 1
    start, end = float(first), float(last + 1)
    if duration is not None:
        end = min(end, float(duration))
        start = min(start, end)
    return start, end


def temporal_iou(prediction: tuple[float, float], truth: tuple[float, float]) -> float:
    """Intersection over union of two ``(start, end)`` intervals (0 when both are empty)."""
    (p_start, p_end), (t_start, t_end) = prediction, truth
    if p_end < p_start or t_end < t_start:
        raise ValueError(f"interval with end before start: {prediction} / {truth}")
    intersection = max(0.0, min(p_end, t_end) - max(p_start, t_start))
    union = (p_end - p_start) + (t_end - t_start) - intersection
    return intersection / union if union > 0 else 0.0


def iou_key(threshold: float) -> str:
    return f"recall_at_iou_{threshold:g}"


def localization_metrics(ious: Iterable[float], iou_thresholds: Sequence[float],
                         n_missing: int = 0) -> dict[str, float]:
    """mIoU and recall at each IoU threshold (percent), counting ``n_missing`` queries as IoU 0."""
    values = np.concatenate([np.asarray(list(ious), dtype=np.float64), np.zeros(int(n_missing))])
    if len(values) == 0:
        return {}
    metrics = {"mean_iou": 100.0 * float(values.mean())}
    for threshold in iou_thresholds:
        metrics[iou_key(threshold)] = 100.0 * float((values >= threshold).mean())
    return metrics


def evaluate_localization(model: Any, scoring: Scoring, queries: Sequence[Query], features: EvalFeatures,
                          settings: Mapping[str, Any], batch_size: int, device: Any,
                          convention: str = "present") -> Outcome:
    """Decode every query's interval from its video's per-second curve (``failures``: missing queries
    have IoU 0; ``present``: only the scored ones count).

    ``settings`` is ``evaluation.localization``: smoothing, threshold, iou_thresholds.
    """
    reasons = Counter(q.missing for q in queries if q.missing is not None)
    by_video: dict[str, list[Query]] = defaultdict(list)
    for query in queries:
        if query.missing is None:
            by_video[query.video_id].append(query)
    ious: list[float] = []
    iou_of: dict[int, float] = {}  # query index -> its IoU (the per-query values of the statistics)
    index_of = {id(query): i for i, query in enumerate(queries)}
    for video_id, mine in tqdm(by_video.items(), desc="localization", unit="video"):
        n_seconds, seconds = embed_seconds(model, scoring, features, video_id, batch_size, device)
        if n_seconds == 0:
            reasons["features: zero seconds"] += len(mine)
            continue
        text = embed_queries(model, scoring, features, [q.tokens for q in mine], batch_size, device)
        curves = similarity(scoring, text, seconds).double().cpu().numpy()
        for query, curve in zip(mine, curves):
            predicted = decode_interval(curve, settings["smoothing"], settings["threshold"])
            end = query.end if math.isfinite(query.end) else float(n_seconds)  # a whole-clip sentence
            ious.append(temporal_iou(predicted, (query.start, max(end, query.start))))
            iou_of[index_of[id(query)]] = ious[-1]
    n_missing = len(queries) - len(ious)
    by_convention = {PRESENT: localization_metrics(ious, settings["iou_thresholds"]),
                     FAILURES: localization_metrics(ious, settings["iou_thresholds"], n_missing=n_missing)}
    return Outcome.of(by_convention, convention, len(queries), n_missing, dict(reasons),
                      extra={"protocol": PROTOCOL,
                             "per_query": localization_per_query(queries, iou_of, settings["iou_thresholds"],
                                                                 convention)})


def localization_per_query(queries: Sequence[Query], iou_of: Mapping[int, float], thresholds: Sequence[float],
                           convention: str) -> dict[str, Any]:
    """Each query's contribution to mIoU (100 x IoU) and to R@IoU (100 x [IoU >= t]); under
    ``failures`` an unscored query counts with IoU 0."""
    keys, ious = [], []
    for i, query in enumerate(queries):
        if i in iou_of or convention == "failures":
            keys.append(query_key(i, query))
            ious.append(iou_of.get(i, 0.0))
    values = {"mean_iou": [100.0 * v for v in ious],
              **{iou_key(t): [100.0 * (v >= t) for v in ious] for t in thresholds}}
    return {"keys": keys, "values": values, "aggregate": dict.fromkeys(values, "mean")}
