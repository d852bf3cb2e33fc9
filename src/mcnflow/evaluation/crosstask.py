"""Step localization recall on CrossTask (Zhukov et al., CVPR 2019) and Mining YouTube (Kuehne et al.
2019), as MCN's ``eval_cross.py`` runs them (Multimodal-Clustering-Network @808948b).

Files, in the formats of the releases and of MCN's evaluation:

- CrossTask (:mod:`mcnflow.corpora.crosstask`): ``videos``, a csv of the test videos, either CrossTask's
  ``videos.csv`` (``task,video_id,url`` lines, no header) or a csv with a header naming ``task`` and
  ``video_id`` columns (MCN's ``cvpr19_test.csv``); ``steps``, CrossTask's ``tasks_primary.txt``
  (blocks of task id / title / url / number of steps / comma-separated steps / blank line) or a JSON
  object ``{task: [step, ...]}`` (MCN's ``step.json``); ``annotations``, a folder with one file per
  video, ``<task>_<video_id>.npy`` (a seconds x steps 0/1 matrix, MCN) or ``<task>_<video_id>.csv``
  (``step,start,end`` lines, steps numbered from 1, CrossTask), the latter rasterised to the video's
  length in seconds as CrossTask does;
- Mining YouTube (:mod:`mcnflow.corpora.mining_youtube`): ``videos_test.txt`` and ``annotations/<id>.srt``;
  a video's steps are its annotated segments in time order, rasterised like CrossTask's csv.

The protocol (``evaluation.crosstask`` settings; MCN's value in brackets):

1. **Clips**: one per second of the annotation's length ``T``. Video: the per-second features are
   max-pooled to ``T`` rows (``adaptive_max_pool1d``) and each row L2-normalised
   (cvpr19_dataloader.py:233-237) [``pool: features``]. Audio: second ``i`` is scored with an
   ``audio_window``-second window centred on it, shifted to stay inside ``[0, T]``
   (cvpr19_dataloader.py:147-160) [``audio_window: 8``]. ``pool: scores`` instead scores each feature
   second and max-pools the score matrix to ``T`` (what mcnflow did before).
2. **Scores**: every step sentence (at most ``max_words`` words [30], cvpr19_dataloader.py:34) against
   every clip, scored as in retrieval (:mod:`mcnflow.evaluation.scoring`). Mining YouTube takes
   the log-softmax over the steps of each second first (eval_cross.py:235-239); CrossTask the raw scores.
3. **Decoding**: :func:`assign_steps` places each step exactly once, in the steps' order, maximising
   the summed score (CrossTask's ``dp(..., exactly_one=True)`` with zero background cost, as
   eval_cross.py:111-115 calls it).
4. **Recall**: a step is recalled when its second is one of its annotated seconds; a video's recall is
   recalled steps / annotated steps (eval_cross.py:124-129). CrossTask averages it over each task's
   videos, then over tasks (eval_cross.py:252-257, 279, 341-351); Mining YouTube over all videos
   (eval_cross.py:266-267, 288). A video with no annotated step is skipped (MCN divides 0 by 0).
   CrossTask's own evaluation (Zhukov et al., train.py ``get_recalls``) pools instead: a task's
   recalled steps over all its videos / its annotated steps over all its videos.

Each scored video's recall (x100) is stored as ``per_query`` (keyed ``<index>:<video_id>``; CrossTask's
with its task as group), so :mod:`mcnflow.statistics` gives step recall the same intervals and paired
tests as retrieval.

A video without features is a missing query: left out (convention ``present``, MCN's loaders only
list videos with features) or recall 0 (``failures``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mcnflow.corpora.crosstask import CrossTaskError, CrossTaskVideo, read_steps, read_videos
from mcnflow.corpora.mining_youtube import MiningStep, read_srt, read_video_list
from mcnflow.evaluation.core import EvalFeatures, Outcome, _chunks, _to, embed_queries, exclude_videos
from mcnflow.evaluation.metrics import FAILURES, PRESENT
from mcnflow.evaluation.scoring import Scoring, embed_clips, similarity
from mcnflow.model import inputs as clips
from mcnflow.statistics import GROUP_MEAN

# MCN's values (cvpr19_dataloader.py); evaluation.crosstask in the config.
MCN_SETTINGS = {"audio_window": 8.0, "max_words": 30, "pool": "features"}
POOLS = ("features", "scores")
# MCN's CrossTask loader pads each audio window to 1024 frames (num_audio_frames); longer windows keep all.
MCN_AUDIO_FRAMES = 1024
PROTOCOL = "mcn"


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


def audio_window(second: int, length: int, window: float) -> tuple[float, float]:
    """The audio ``(start, end)`` seconds scoring ``second`` of a ``length``-second annotation: a
    ``window``-second span centred on it, shifted to stay inside ``[0, length]`` (MCN
    cvpr19_dataloader.py:147-160: the first ``window / 2`` seconds take ``[0, window]``, the last
    ones ``[length - window, length]``; a start before 0 reads from 0)."""
    half = window / 2.0
    if second < half:
        return 0.0, float(window)
    if second > length - half:
        return max(0.0, float(length) - window), float(length)
    return float(second) - half, float(second) + half


def pool_rows(features: np.ndarray, length: int) -> np.ndarray:
    """(rows, dim) per-second features -> (length, dim): adaptive max pooling over time, then each
    row L2-normalised (MCN cvpr19_dataloader.py:233-237; a zero row stays zero)."""
    tensor = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32).T)[None]
    pooled = torch.nn.functional.adaptive_max_pool1d(tensor, int(length))[0].T
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def pool_scores(scores: np.ndarray, n_seconds: int) -> np.ndarray:
    """Resample a (seconds, steps) score matrix to the annotation's length by adaptive max pooling
    over time (``pool: scores``; MCN pools the features instead, :func:`pool_rows`)."""
    if scores.shape[0] == n_seconds:
        return scores
    tensor = torch.from_numpy(np.ascontiguousarray(scores.T, dtype=np.float64))[None]
    return torch.nn.functional.adaptive_max_pool1d(tensor, n_seconds)[0].T.numpy()


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log-softmax over the steps (columns) of each second (MCN's Mining YouTube, eval_cross.py:235-239)."""
    scores = np.asarray(scores, dtype=np.float64)
    top = scores.max(axis=1, keepdims=True)
    return scores - top - np.log(np.exp(scores - top).sum(axis=1, keepdims=True))


def second_items(modality: str, data: np.ndarray, length: int, settings: Mapping[str, Any],
                 pooled: bool) -> list[dict[str, np.ndarray]]:
    """The ``length`` clips of one video's ``modality`` features: video rows pooled to ``length``
    (``pooled``) or taken one per second; audio windows of ``settings['audio_window']`` seconds."""
    if modality == "video":
        if pooled:
            if isinstance(data, Mapping):  # MCN's 2D + 3D streams: each pooled and normalised, concatenated
                rows = np.concatenate([pool_rows(data[s], length) for s in clips.VIDEO_STREAM_RATES if s in data], axis=1)
            else:
                rows = pool_rows(data, length)
            return [{"video": row} for row in rows]
        return [clips.video_item(data, i, i) for i in range(length)]
    window = float(settings["audio_window"])
    frames = max(MCN_AUDIO_FRAMES, int(math.ceil(window * clips.AUDIO_FRAMES_PER_SECOND)))
    return [clips.audio_item(data, *audio_window(i, length, window), frames) for i in range(length)]


def embed_step_clips(model: Any, scoring: Scoring, features: EvalFeatures, video_id: str, length: int,
                     settings: Mapping[str, Any], pooled: bool, batch_size: int,
                     device: Any) -> dict[Any, torch.Tensor]:
    """Per-term embeddings of the ``length`` clips of one video (see :func:`second_items`)."""
    items = {m: second_items(m, features.index(m).read(video_id), length, settings, pooled)
             for m in scoring.clip_modalities}
    parts: dict[Any, list[torch.Tensor]] = defaultdict(list)
    for chunk in _chunks(length, batch_size):
        batches = {m: _to(clips.collate(items[m][chunk]), device) for m in scoring.clip_modalities}
        for term, embedding in embed_clips(model, scoring, batches).items():
            parts[term].append(embedding)
    return {term: torch.cat(chunks) for term, chunks in parts.items()}


def feature_seconds(features: EvalFeatures, scoring: Scoring, video_id: str) -> int:
    """The video's length in seconds: its video features' when the scoring uses video, else its audio's."""
    modality = "video" if "video" in scoring.clip_modalities else scoring.clip_modalities[0]
    return features.seconds(modality, features.index(modality).read(video_id))


def video_scores(model: Any, scoring: Scoring, features: EvalFeatures, video_id: str, step_text: Mapping,
                 length: int, n_seconds: int, settings: Mapping[str, Any], batch_size: int,
                 device: Any) -> np.ndarray:
    """The (length, steps) score matrix of one video (protocol steps 1-2, before any log-softmax)."""
    if settings["pool"] == "features":
        seconds = embed_step_clips(model, scoring, features, video_id, length, settings, True, batch_size, device)
        return similarity(scoring, step_text, seconds).T.double().cpu().numpy()
    seconds = embed_step_clips(model, scoring, features, video_id, n_seconds, settings, False, batch_size, device)
    return pool_scores(similarity(scoring, step_text, seconds).T.double().cpu().numpy(), length)


@dataclass(frozen=True)
class StepVideo:
    """One test video: its ``group`` (CrossTask task; Mining YouTube: the video), ordered step
    sentences, and ``truth(n_seconds)`` -> its (seconds, steps) 0/1 annotation."""

    group: str
    video_id: str
    steps: tuple[str, ...]
    truth: Callable[[int], np.ndarray]


def crosstask_videos(files: Mapping[str, str]) -> list[StepVideo]:
    videos = read_videos(files["videos"])
    task_steps = read_steps(files["steps"])
    unknown = sorted({v.task for v in videos} - set(task_steps))
    if unknown:
        raise CrossTaskError(f"{files['videos']}: task(s) {', '.join(unknown)} have no steps in {files['steps']}")

    def truth_of(video: CrossTaskVideo, n_steps: int) -> Callable[[int], np.ndarray]:
        return lambda n_seconds: read_annotation(files["annotations"], video, n_steps, n_seconds)

    return [StepVideo(v.task, v.video_id, tuple(task_steps[v.task]), truth_of(v, len(task_steps[v.task])))
            for v in videos]


def rasterise(steps: Sequence[MiningStep], n_seconds: int) -> np.ndarray:
    """(n_seconds, steps) 0/1: step k covers seconds ``floor(start) .. ceil(end) - 1`` (as CrossTask's csv)."""
    matrix = np.zeros((n_seconds, len(steps)), dtype=np.uint8)
    for k, step in enumerate(steps):
        matrix[max(int(math.floor(step.start)), 0):max(int(math.ceil(step.end)), 0), k] = 1
    return matrix


def mining_youtube_videos(files: Mapping[str, str]) -> list[StepVideo]:
    videos = []
    for video_id in read_video_list(files["videos"]):
        steps = read_srt(Path(files["annotations"]) / f"{video_id}.srt")
        videos.append(StepVideo(video_id, video_id, tuple(step.sentence for step in steps),
                                lambda n_seconds, steps=steps: rasterise(steps, n_seconds)))
    return videos


@dataclass(frozen=True)
class StepTask:
    """How a benchmark turns scores into recall: ``normalise`` (log-softmax over steps) and whether
    recall is averaged per group (task) first."""

    metric: str
    normalise: bool
    per_group: bool
    load: Callable[[Mapping[str, str]], list[StepVideo]]


STEP_TASKS = {
    "crosstask": StepTask("crosstask_recall", normalise=False, per_group=True, load=crosstask_videos),
    "mining_youtube": StepTask("mining_youtube_recall", normalise=True, per_group=False, load=mining_youtube_videos),
}


def aggregate(task: StepTask, records: Sequence[tuple[str, float | None]]) -> tuple[dict, dict]:
    """(metrics, per-group recall) in percent from ``(group, recall)`` records; ``None`` = missing video."""
    if task.per_group:
        by_group: dict[str, list[float]] = defaultdict(list)
        for group, recall in records:
            by_group[group].append(recall)
        metrics, per_group = crosstask_metrics(by_group)
        return ({task.metric: metrics["crosstask_recall"]} if metrics else {}), per_group
    values = [recall for _, recall in records]
    return ({task.metric: 100.0 * float(np.mean(values))} if values else {}), {}


def steps_per_query(task: StepTask, records: Sequence[tuple[str, str, float | None]],
                    convention: str) -> dict[str, Any]:
    """Each video's contribution to the step recall (100 x its recall), for intervals and paired tests
    (:mod:`mcnflow.statistics`), from the same ``(key, group, recall)`` records as the metric:
    ``present``: the scored videos; ``failures``: missing ones too, with recall 0. CrossTask's values
    carry their task as group (its recall is a mean of task means)."""
    kept = [(key, group, recall) for key, group, recall in records if recall is not None or convention == FAILURES]
    per_query: dict[str, Any] = {"keys": [key for key, _, _ in kept],
                                 "values": {task.metric: [100.0 * (recall or 0.0) for _, _, recall in kept]},
                                 "aggregate": {task.metric: GROUP_MEAN if task.per_group else "mean"}}
    if task.per_group:
        per_query["groups"] = [group for _, group, _ in kept]
    return per_query


def evaluate_steps(model: Any, scoring: Scoring, task: str, files: Mapping[str, str], features: EvalFeatures,
                   batch_size: int, device: Any, settings: Mapping[str, Any] | None = None,
                   convention: str = PRESENT, excluded: Iterable[str] = ()) -> Outcome:
    """Step recall of one step-localization benchmark (``task`` crosstask or mining_youtube; see the
    module doc), with each video's recall in ``extra["per_query"]``. ``excluded``: video ids left out
    of the benchmark."""
    if task not in STEP_TASKS:
        raise ValueError(f"task {task!r}; allowed values: {', '.join(STEP_TASKS)}")
    settings = {**MCN_SETTINGS, **dict(settings or {})}
    if settings["pool"] not in POOLS:
        raise ValueError(f"evaluation.crosstask.pool {settings['pool']!r}; allowed values: {', '.join(POOLS)}")
    protocol = STEP_TASKS[task]
    videos, n_excluded = exclude_videos(protocol.load(files), excluded)
    step_text: dict[tuple[str, ...], dict] = {}
    records: list[tuple[str, str, float | None]] = []   # (query key, group, recall); None: a missing video
    reasons: Counter = Counter()
    for index, video in enumerate(tqdm(videos, desc=task, unit="video")):
        key = f"{index}:{video.video_id}"  # as retrieval's query keys: the same for every experiment
        reason = features.why_missing(video.video_id, scoring.clip_modalities)
        n_seconds = 0 if reason else feature_seconds(features, scoring, video.video_id)
        truth = None
        if reason is None:
            truth = video.truth(n_seconds)
            if n_seconds == 0 or len(truth) == 0:
                reason = "features: zero seconds"
        if reason is not None:
            reasons[reason] += 1
            records.append((key, video.group, None))
            continue
        if video.steps not in step_text:
            tokens = [features.sentence_tokens(step, settings["max_words"]) for step in video.steps]
            step_text[video.steps] = embed_queries(model, scoring, features, tokens, batch_size, device,
                                                   max_words=settings["max_words"])
        scores = video_scores(model, scoring, features, video.video_id, step_text[video.steps], len(truth),
                              n_seconds, settings, batch_size, device)
        if protocol.normalise:
            scores = log_softmax(scores)
        recall = step_recall(truth, assign_steps(scores))
        if recall is not None:  # a video with no annotated step says nothing about recall
            records.append((key, video.group, recall))
    present = [(g, r) for _, g, r in records if r is not None]
    failures = [(g, 0.0 if r is None else r) for _, g, r in records]
    (metrics_present, groups_present), (metrics_failures, groups_failures) = (
        aggregate(protocol, present), aggregate(protocol, failures))
    per_group = groups_present if convention == PRESENT else groups_failures
    extra: dict[str, Any] = {"protocol": PROTOCOL, "n_excluded": n_excluded,
                             "per_query": steps_per_query(protocol, records, convention)}
    if protocol.per_group:
        extra["per_task"] = per_group
    return Outcome.of({PRESENT: metrics_present, FAILURES: metrics_failures}, convention, len(videos),
                      sum(reasons.values()), dict(reasons), extra=extra)
