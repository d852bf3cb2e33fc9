"""Zero-shot text-to-clip retrieval: every query sentence ranks every benchmark clip.

Queries are the corpus's evaluation segments (YouCook2: the annotated steps of the validation
videos; MSR-VTT 1k-A: one sentence per video, the clip being the whole video). Clip ``i`` is the
window ``[start, end]`` of query ``i``'s video, cut as in training (:mod:`mcnflow.model.inputs`).
The query's caption tokens come from the text shards, whose captions are the corpus's sentences of
that video in the same order (:mod:`mcnflow.features.text`); the order and start times are checked.

A query is *missing* when its video has no features of a modality the scoring needs, or its text
does not line up with the corpus: it is not ranked, and missing clips are not candidates either (like
MCN's MSR-VTT evaluation, where 968 of the 1,000 clips have audio). Both conventions are reported
(:data:`mcnflow.evaluation.metrics.CONVENTIONS`): over the queries present (MCN's YouCook2) and
with the missing queries counted as failures (MCN's MSR-VTT).

*Excluded* queries are not part of the benchmark at all: :func:`exclude_videos` drops the segments of
videos listed by another corpus (MCN's YouCook2 set leaves out the validation videos that are in
HowTo100M, 3,350 of 3,492 clips kept).
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from mcnflow.core.streams import stream, video_by_choice
from mcnflow.features.captions import tokenize
from mcnflow.features.store import FeatureIndex, check_rate
from mcnflow.features.text_index import TextIndex, WordSourceMismatch
from mcnflow.features.video_index import VideoIndex
from mcnflow.features.word2vec import WordVectors, read_rows, read_word_vectors
from mcnflow.model import inputs as clips
from mcnflow.evaluation.metrics import RECALL_KS, check_convention, recall_key, retrieval_conventions, target_ranks
from mcnflow.evaluation.scoring import Scoring, embed_clips, embed_text, similarity

log = logging.getLogger(__name__)

# seconds: the text shards store caption times as float32 (about 1 ms resolution at 10^4 s)
TIME_TOLERANCE = 0.01


@dataclass
class EvalFeatures:
    """The feature shards of one benchmark corpus and how clips are cut from them."""

    text: TextIndex
    max_words: int
    audio_frames: int
    word_dim: int
    video: VideoIndex | None = None
    audio: FeatureIndex | None = None
    word2vec_path: str = ""
    word2vec: WordVectors | None = None

    @classmethod
    def open(cls, *, shards: Mapping[str, Sequence[str | Path]], word2vec: str | Path, max_words: int,
             audio_frames: int, word_dim: int, fingerprint: str,
             video_features: Sequence[str] = ("2d",)) -> "EvalFeatures":
        """``shards``: stream name -> HDF5 shards (mcnflow.core.streams; a stream not given is not read).
        ``fingerprint``: the word2vec source the checkpoint was trained with; the text shards and
        the word2vec file must be that source (else WordSourceMismatch). ``video_features``: the
        video streams the model reads (training.video_features)."""
        streams = video_by_choice(shards, video_features)
        video_index = VideoIndex(streams, "evaluation") if any(streams.values()) else None
        audio = list(shards.get("audio", ()))
        check_rate(audio, stream("audio"), "evaluation")
        words = read_word_vectors(word2vec, vectors=False)
        if fingerprint and words.fingerprint != fingerprint:
            raise WordSourceMismatch(f"{word2vec} is word2vec source {words.fingerprint[:12]}, but the checkpoint "
                                     f"was trained with {fingerprint[:12]}")
        index = TextIndex(list(shards.get("text", ())))
        index.require(fingerprint or words.fingerprint, "the checkpoint")
        return cls(text=index, max_words=max_words, audio_frames=audio_frames, word_dim=word_dim,
                   video=video_index, audio=FeatureIndex(audio) if audio else None,
                   word2vec_path=str(word2vec), word2vec=words)

    def sentence_tokens(self, sentence: str, max_words: int | None = None) -> np.ndarray:
        """A free sentence (e.g. a CrossTask step) as word vectors, tokenized as the captions are
        (at most ``max_words`` words; default the training's)."""
        assert self.word2vec is not None
        limit = self.max_words if max_words is None else max_words
        ids = [self.word2vec.ids[w] for w in tokenize(sentence, self.word2vec.ids, limit)]
        return read_rows(self.word2vec_path, ids) if ids else np.zeros((0, self.word_dim), np.float32)

    def index(self, modality: str) -> FeatureIndex | None:
        return {"video": self.video, "audio": self.audio, "text": self.text}[modality]

    def why_missing(self, video_id: str, modalities: Iterable[str]) -> str | None:
        """None when ``video_id`` has every modality; else the first gap, e.g. ``audio: no_audio``."""
        for modality in modalities:
            index = self.index(modality)
            if index is None:
                return f"{modality}: no shards given"
            if video_id not in index:
                return f"{modality}: {index.status.get(video_id, 'not extracted')}"
        return None

    def clip_item(self, modality: str, data: np.ndarray, start: float, end: float) -> dict[str, np.ndarray]:
        """The clip ``[start, end]`` of one video's features, cut as in training."""
        if modality == "video":
            return clips.video_item(data, start, end)
        return clips.audio_item(data, start, end, self.audio_frames)

    def second_item(self, modality: str, data: np.ndarray, second: int) -> dict[str, np.ndarray]:
        """The one-second clip ``[second, second + 1)`` (localization curves).

        video_item's window includes its end row (a clip [s, e] covers rows s..e), so one second is
        the window [second, second]; audio is exactly that second's frames, with no padding.
        """
        if modality == "video":
            return clips.video_item(data, second, second)
        return clips.audio_item(data, second, second + 1, int(clips.AUDIO_FRAMES_PER_SECOND))

    def seconds(self, modality: str, data: np.ndarray) -> int:
        """How many whole or partial seconds one video's features of ``modality`` cover."""
        if modality == "video":
            if isinstance(data, Mapping):  # 2D and/or 3D streams: the 2D rows are seconds
                stream = "2d" if "2d" in data else next(iter(data))
                return int(data[stream].shape[0] / clips.VIDEO_STREAM_RATES[stream])
            return int(data.shape[0] / clips.VIDEO_FEATURES_PER_SECOND)
        return int(math.ceil(data.shape[1] / clips.AUDIO_FRAMES_PER_SECOND))

    def text_item(self, tokens: np.ndarray, max_words: int | None = None) -> dict[str, np.ndarray]:
        return clips.text_item(tokens, self.max_words if max_words is None else max_words, self.word_dim)

    def close(self) -> None:
        for index in (self.text, self.video, self.audio):
            if index is not None:
                index.close()


@dataclass
class Query:
    """A segment with its caption tokens, or the reason it cannot be scored."""

    video_id: str
    start: float
    end: float
    tokens: np.ndarray | None  # one word vector per token
    missing: str | None = None


@dataclass
class Outcome:
    """What a benchmark run produced: its metrics and how many queries were (not) scored.

    ``by_convention`` holds the metrics of both conventions (``present``, ``failures``);
    ``metrics`` is the one the benchmark reports first (its ``convention``).
    """

    metrics: dict[str, float]
    n_queries: int
    n_missing: int
    missing_reasons: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    by_convention: dict[str, dict[str, float]] = field(default_factory=dict)
    convention: str = ""

    @classmethod
    def of(cls, by_convention: dict[str, dict[str, float]], convention: str, n_queries: int, n_missing: int,
           missing_reasons: dict[str, int] | None = None, extra: dict[str, Any] | None = None) -> "Outcome":
        check_convention(convention)
        return cls(dict(by_convention[convention]), n_queries, n_missing, dict(missing_reasons or {}),
                   dict(extra or {}), {name: dict(values) for name, values in by_convention.items()}, convention)


def query_key(index: int, query: Query) -> str:
    """A query's name, the same for every experiment evaluated on the benchmark (pairs the tests)."""
    return f"{index}:{query.video_id}"


def retrieval_per_query(queries: Sequence[Query], ranks: np.ndarray, convention: str,
                        ks: Sequence[int] = RECALL_KS) -> dict[str, Any]:
    """Each query's contribution to every retrieval metric, for intervals and paired tests
    (:mod:`mcnflow.statistics`): R@K = mean of 100 x [rank <= K], MedR / MeanR = median / mean rank.
    ``present``: the scored queries; ``failures``: missing ones too, with the worst rank and never a
    hit (as :func:`mcnflow.evaluation.metrics.retrieval_metrics` counts them)."""
    keys: list[str] = []
    query_ranks: list[float] = []
    hits: dict[str, list[float]] = {recall_key(k): [] for k in ks}
    scored = iter(np.asarray(ranks, dtype=np.float64).tolist())
    for i, query in enumerate(queries):
        if query.missing is None:
            rank, found = next(scored), True
        elif convention == "failures":
            rank, found = float(len(queries)), False
        else:
            continue
        keys.append(query_key(i, query))
        query_ranks.append(rank)
        for k in ks:
            hits[recall_key(k)].append(100.0 if found and rank <= k else 0.0)
    return {"keys": keys, "values": {**hits, "median_rank": query_ranks, "mean_rank": list(query_ranks)},
            "aggregate": {**{recall_key(k): "mean" for k in ks}, "median_rank": "median", "mean_rank": "mean"}}


def exclude_videos(items: Sequence[Any], excluded: Iterable[str]) -> tuple[list[Any], int]:
    """``items`` (segments or step-localization videos, each with a ``video_id``) whose video is not in
    ``excluded``, and how many were left out."""
    excluded = set(excluded)
    kept = [item for item in items if item.video_id not in excluded]
    return kept, len(items) - len(kept)


def _same_time(a: float, b: float) -> bool:
    if math.isinf(a) or math.isinf(b):
        return math.isinf(a) and math.isinf(b)
    return abs(a - b) <= TIME_TOLERANCE


def align_queries(segments: Sequence[Any], features: EvalFeatures, needed: Iterable[str],
                  known_videos: set[str] | None = None) -> list[Query]:
    """One Query per segment (in order): its tokens' word vectors from the text shards, or why it is missing."""
    needed = list(needed)
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, segment in enumerate(segments):
        by_video[segment.video_id].append(i)
    queries: list[Query | None] = [None] * len(segments)
    for video_id, indices in by_video.items():
        reason = None
        if known_videos is not None and video_id not in known_videos:
            reason = "not in manifest"
        reason = reason or features.why_missing(video_id, ["text", *needed])
        tokens: list[np.ndarray] | None = None
        if reason is None:
            text = features.text.read(video_id)
            starts, ends, offsets = text["start"], text["end"], text["offsets"]
            mine = [segments[i] for i in indices]
            if len(starts) != len(mine):
                reason = f"text: {len(starts)} captions for {len(mine)} segments"
            elif not all(_same_time(float(s), seg.start) and _same_time(float(e), seg.end)
                         for s, e, seg in zip(starts, ends, mine)):
                reason = "text: caption times differ from the segments"
            else:
                tokens = [text["vectors"][offsets[k]:offsets[k + 1]] for k in range(len(mine))]
            if reason:
                log.warning("%s: %s; its %d queries count as failures", video_id, reason, len(mine))
        for k, i in enumerate(indices):
            seg = segments[i]
            queries[i] = Query(seg.video_id, float(seg.start), float(seg.end),
                               tokens[k] if tokens is not None else None, reason)
    return queries  # type: ignore[return-value]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _chunks(n: int, size: int) -> Iterable[slice]:
    for first in range(0, n, size):
        yield slice(first, min(first + size, n))


def embed_queries(model: Any, scoring: Scoring, features: EvalFeatures, tokens: Sequence[np.ndarray],
                  batch_size: int, device: torch.device, desc: str = "text",
                  max_words: int | None = None) -> dict[str | None, torch.Tensor]:
    """Text embeddings of every query, per space the scoring uses (on ``device``); ``max_words``
    word slots per query (default the training's)."""
    parts: dict[str | None, list[torch.Tensor]] = defaultdict(list)
    for chunk in tqdm(list(_chunks(len(tokens), batch_size)), desc=desc, unit="batch", leave=False):
        batch = _to(clips.collate([features.text_item(t, max_words) for t in tokens[chunk]]), device)
        for space, embedding in embed_text(model, scoring, batch).items():
            parts[space].append(embedding)
    return {space: torch.cat(chunks) for space, chunks in parts.items()}


def embed_windows(model: Any, scoring: Scoring, features: EvalFeatures, windows: Sequence[tuple[str, float, float]],
                  batch_size: int, device: torch.device, desc: str = "clips") -> dict[Any, torch.Tensor]:
    """Clip embeddings per score term for ``(video_id, start, end)`` windows, in order.

    Each video's features are read once per batch however many of its windows the batch holds.
    """
    parts: dict[Any, list[torch.Tensor]] = defaultdict(list)
    for chunk in tqdm(list(_chunks(len(windows), batch_size)), desc=desc, unit="batch", leave=False):
        batches = {}
        for modality in scoring.clip_modalities:
            cache: dict[str, np.ndarray] = {}
            items = []
            for video_id, start, end in windows[chunk]:
                if video_id not in cache:
                    cache[video_id] = features.index(modality).read(video_id)
                items.append(features.clip_item(modality, cache[video_id], start, end))
            batches[modality] = _to(clips.collate(items), device)
        for term, embedding in embed_clips(model, scoring, batches).items():
            parts[term].append(embedding)
    return {term: torch.cat(chunks) for term, chunks in parts.items()}


def embed_seconds(model: Any, scoring: Scoring, features: EvalFeatures, video_id: str, batch_size: int,
                  device: torch.device) -> tuple[int, dict[Any, torch.Tensor]]:
    """(seconds, per-term embeddings of every one-second clip) of one video.

    The video's length is that of its video features when the scoring uses video (the seconds the
    frames cover), else that of its audio.
    """
    data = {m: features.index(m).read(video_id) for m in scoring.clip_modalities}
    first = "video" if "video" in data else scoring.clip_modalities[0]
    n_seconds = features.seconds(first, data[first])
    parts: dict[Any, list[torch.Tensor]] = defaultdict(list)
    for chunk in _chunks(n_seconds, batch_size):
        batches = {m: _to(clips.collate([features.second_item(m, data[m], i) for i in range(chunk.start, chunk.stop)]),
                          device)
                   for m in scoring.clip_modalities}
        for term, embedding in embed_clips(model, scoring, batches).items():
            parts[term].append(embedding)
    return n_seconds, {term: torch.cat(chunks) for term, chunks in parts.items()}


def evaluate_retrieval(model: Any, scoring: Scoring, queries: Sequence[Query], features: EvalFeatures,
                       tie_policy: str, batch_size: int, device: torch.device, convention: str = "present") -> Outcome:
    """Rank every scorable query's own clip among all scorable clips. ``present``: metrics over the
    scored queries; ``failures``: missing queries are misses with the worst rank (``convention``
    picks ``metrics``; both are in ``by_convention``)."""
    scored = [q for q in queries if q.missing is None]
    reasons = Counter(q.missing for q in queries if q.missing is not None)
    n_queries, n_missing = len(queries), len(queries) - len(scored)
    ranks = np.zeros(0)
    if scored:
        text = embed_queries(model, scoring, features, [q.tokens for q in scored], batch_size, device)
        clip_embeddings = embed_windows(model, scoring, features, [(q.video_id, q.start, q.end) for q in scored],
                                        batch_size, device)
        ranks_parts = []
        for chunk in _chunks(len(scored), batch_size):
            scores = similarity(scoring, {s: t[chunk] for s, t in text.items()}, clip_embeddings)
            targets = np.arange(chunk.start, chunk.stop)
            ranks_parts.append(target_ranks(scores.double().cpu().numpy(), targets, tie_policy))
        ranks = np.concatenate(ranks_parts)
    by_convention = retrieval_conventions(ranks, n_missing=n_missing, worst_rank=n_queries)
    return Outcome.of(by_convention, convention, n_queries, n_missing, dict(reasons),
                      extra={"per_query": retrieval_per_query(queries, ranks, convention)})
