"""CrossTask step localization recall (Zhukov et al., CVPR 2019), as MCN's ``eval_cross.py`` computes it.

Files (``evaluation.crosstask``), in the formats of the CrossTask release and of MCN's evaluation:

- ``videos``: a csv of the test videos, either CrossTask's ``videos.csv`` (``task,video_id,url`` lines,
  no header) or a csv with a header naming ``task`` and ``video_id`` columns (MCN's ``cvpr19_test.csv``);
- ``steps``: the step descriptions per task, either CrossTask's ``tasks_primary.txt`` (blocks of
  task id / title / url / number of steps / comma-separated steps / blank line) or a JSON object
  ``{task: [step, ...]}`` (MCN's ``step.json``);
- ``annotations``: a folder with one file per video, ``<task>_<video_id>.npy`` (a seconds x steps
  0/1 matrix, MCN) or ``<task>_<video_id>.csv`` (``step,start,end`` lines, steps numbered from 1,
  CrossTask), the latter rasterised to the video's length in seconds as CrossTask does.

Scoring: every step sentence against every second of the video (the per-second clips of
:mod:`mcnflow.evaluation.localization`), then :func:`assign_steps` places each step exactly once,
in the task's order, by dynamic programming (CrossTask's ``dp(..., exactly_one=True)`` with zero
background cost). A step is recalled when its frame falls inside one of its annotated seconds;
recall = recalled steps / annotated steps, averaged over a task's videos, then over tasks.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mcnflow.corpora.crosstask import CrossTaskError, CrossTaskVideo, read_steps, read_videos
from mcnflow.evaluation.core import EvalFeatures, Outcome, embed_queries, embed_seconds
from mcnflow.evaluation.scoring import Scoring, similarity


def read_annotation(directory: str | Path, video: CrossTaskVideo, n_steps: int,
                    n_seconds: int | None) -> np.ndarray:
    """The seconds x steps 0/1 matrix of one video (``.npy`` as is; ``.csv`` rasterised to ``n_seconds``)."""
    directory = Path(directory)
    stem = f"{video.task}_{video.video_id}"
    npy, table = directory / f"{stem}.npy", directory / f"{stem}.csv"
    if npy.is_file():
        matrix = np.load(npy)
        if matrix.ndim != 2 or matrix.shape[1] != n_steps:
            raise CrossTaskError(f"{npy}: shape {matrix.shape}; expected (seconds, {n_steps})")
        return (matrix > 0).astype(np.uint8)
    if table.is_file():
        if n_seconds is None:
            raise CrossTaskError(f"{table}: a csv annotation needs the video's length in seconds")
        matrix = np.zeros((n_seconds, n_steps), dtype=np.uint8)
        with open(table, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    step, start, end = line.strip().split(",")
                    step_index = int(step) - 1
                    first, last = int(math.floor(float(start))), int(math.ceil(float(end)))
                except ValueError:
                    raise CrossTaskError(f"{table}: line {number}: expected step,start,end; got {line.strip()!r}") from None
                if not 0 <= step_index < n_steps:
                    raise CrossTaskError(f"{table}: line {number}: step {step} outside 1..{n_steps}")
                matrix[max(first, 0):max(last, 0), step_index] = 1
        return matrix
    raise CrossTaskError(f"no annotation for {stem} in {directory} (.npy or .csv)")


def assign_steps(scores: np.ndarray) -> np.ndarray:
    """Place each step (column) on exactly one second (row), in column order, maximising the summed score.

    Returns a 0/1 matrix of the shape of ``scores`` with one 1 per column. Seconds are strictly
    increasing from step to step; a video shorter than its number of steps lets consecutive steps
    share a second (CrossTask's DP has no valid path then).
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_seconds, n_steps = scores.shape
    if n_seconds == 0 or n_steps == 0:
        return np.zeros(scores.shape, dtype=np.uint8)
    shift = 1 if n_seconds >= n_steps else 0  # strict order when it is possible
    total = scores[:, 0].copy()  # best sum of steps 0..k with step k at second t
    back = np.zeros((n_steps, n_seconds), dtype=np.int64)
    for k in range(1, n_steps):
        # best previous total at any second <= t - shift, and where it was
        running_best = np.maximum.accumulate(total)
        running_arg = _running_argmax(total)
        previous = np.full(n_seconds, -np.inf)
        previous_arg = np.zeros(n_seconds, dtype=np.int64)
        previous[shift:] = running_best[:n_seconds - shift]
        previous_arg[shift:] = running_arg[:n_seconds - shift]
        total = scores[:, k] + previous
        back[k] = previous_arg
    assignment = np.zeros(scores.shape, dtype=np.uint8)
    second = int(np.argmax(total))
    for k in range(n_steps - 1, -1, -1):
        assignment[second, k] = 1
        second = int(back[k, second])
    return assignment


def _running_argmax(values: np.ndarray) -> np.ndarray:
    """Index of the (first) maximum of ``values[:t + 1]`` for every t."""
    best = np.maximum.accumulate(values)
    is_new_best = np.concatenate([[True], values[1:] > best[:-1]])
    indices = np.where(is_new_best, np.arange(len(values)), 0)
    return np.maximum.accumulate(indices)


def step_recall(truth: np.ndarray, assignment: np.ndarray) -> float | None:
    """Recalled steps / annotated steps for one video; None when the video has no annotated step."""
    annotated = truth.sum(axis=0) > 0
    if not annotated.any():
        return None
    recalled = ((truth * assignment).sum(axis=0) > 0) & annotated
    return float(recalled.sum()) / float(annotated.sum())


def crosstask_metrics(video_recalls: Mapping[str, Sequence[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, per-task recall), in percent: recall averaged over each task's videos, then over tasks."""
    per_task = {task: 100.0 * float(np.mean(values)) for task, values in video_recalls.items() if len(values)}
    if not per_task:
        return {}, {}
    return {"crosstask_recall": float(np.mean(list(per_task.values())))}, per_task


def pool_scores(scores: np.ndarray, n_seconds: int) -> np.ndarray:
    """Resample a (seconds, steps) score matrix to the annotation's length by adaptive max pooling
    over time (MCN adaptive-max-pools the features to the annotation's length instead)."""
    if scores.shape[0] == n_seconds:
        return scores
    tensor = torch.from_numpy(np.ascontiguousarray(scores.T, dtype=np.float64))[None]
    return torch.nn.functional.adaptive_max_pool1d(tensor, n_seconds)[0].T.numpy()


def evaluate_crosstask(model: Any, scoring: Scoring, files: Mapping[str, str], features: EvalFeatures,
                       batch_size: int, device: Any) -> Outcome:
    """Step recall over the CrossTask test videos; a video without features scores recall 0."""
    videos = read_videos(files["videos"])
    task_steps = read_steps(files["steps"])
    unknown = sorted({v.task for v in videos} - set(task_steps))
    if unknown:
        raise CrossTaskError(f"{files['videos']}: task(s) {', '.join(unknown)} have no steps in {files['steps']}")
    step_embeddings: dict[str, dict] = {}
    recalls: dict[str, list[float]] = defaultdict(list)
    reasons: Counter = Counter()
    for video in tqdm(videos, desc="crosstask", unit="video"):
        reason = features.why_missing(video.video_id, scoring.clip_modalities)
        if reason is not None:
            reasons[reason] += 1
            recalls[video.task].append(0.0)
            continue
        steps = task_steps[video.task]
        if video.task not in step_embeddings:
            tokens = [features.sentence_tokens(step) for step in steps]
            step_embeddings[video.task] = embed_queries(model, scoring, features, tokens, batch_size, device)
        n_seconds, seconds = embed_seconds(model, scoring, features, video.video_id, batch_size, device)
        truth = read_annotation(files["annotations"], video, len(steps), n_seconds)
        if n_seconds == 0 or len(truth) == 0:
            reasons["features: zero seconds"] += 1
            recalls[video.task].append(0.0)
            continue
        scores = similarity(scoring, step_embeddings[video.task], seconds).T.double().cpu().numpy()
        recall = step_recall(truth, assign_steps(pool_scores(scores, len(truth))))
        if recall is not None:  # a video with no annotated step says nothing about recall
            recalls[video.task].append(recall)
    metrics, per_task = crosstask_metrics(recalls)
    n_missing = sum(reasons.values())
    return Outcome(metrics, len(videos), n_missing, dict(reasons), extra={"per_task": per_task})
