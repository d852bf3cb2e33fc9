"""Clips: which window of a video one training sample covers, and each modality's features for it.

Shared by training and evaluation so both cut features the same way. A clip is a time window
[start, end] in seconds; every modality is cut to the same window (MCN, random_audio_windows=0):

  video  rows int(start * fps) : int(end * fps) + 1 of the (rows, 2048) features, max-pooled over
         time, then L2-normalised (an empty window gives zeros, as MCN); with 2D and 3D features each
         stream is cut at its own rate (1 and 1.5 rows/s), pooled and normalised, then concatenated;
  audio  frames int(start * 100) : int(end * 100) of the (40, frames) log-mel, cut or zero-padded to
         ``audio_frames``; ``nframes`` = the real frames kept;
  text   the clip's caption token ids (merge order) -> word vectors, the first ``max_words``,
         zero-padded, with a mask of the real words.

Each function returns a dict of numpy arrays keyed as MCN.encode reads them; ``collate`` stacks
items into the tensor batch that ``MCN.embed`` takes. An ``end`` of ``math.inf`` means "to the end".

The training loader cuts all the clips of a video at once, straight into its batch (``pool_clips``,
``audio_clips``, ``text_clips``): the same values as the one-clip functions, which define them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from mcnflow.core.streams import VIDEO_FEATURE_RATES, stream

# The streams' rates (mcnflow.core.streams): the 2D video stream's rows and the audio's log-mel frames
# per second; by training.video_features choice, the rows per second of each video stream.
VIDEO_FEATURES_PER_SECOND = float(stream("video").rate)
AUDIO_FRAMES_PER_SECOND = float(stream("audio").rate)
VIDEO_STREAM_RATES = VIDEO_FEATURE_RATES

BATCH_KEYS = {"video": ("video",), "audio": ("audio", "nframes"), "text": ("words", "mask")}


@dataclass(frozen=True)
class Clip:
    start: float
    end: float
    captions: tuple[int, ...]   # caption indices, in the order they were merged (the sampled one first)


def grow_clip(starts: Sequence[float], ends: Sequence[float], index: int, min_time: float) -> Clip:
    """Grow caption ``index`` until it spans at least ``min_time`` seconds (MCN's rule).

    Each round merges the neighbouring caption (before or after) that gives the shorter total span,
    preferring the one before on a tie; at either end of the video the other side is taken. It stops
    when the span is long enough or there is nothing left to merge.
    """
    count = len(starts)
    if not 0 <= index < count:
        raise IndexError(f"caption {index} of {count}")
    first = last = index
    order = [index]
    while ends[last] - starts[first] < min_time:
        has_prev, has_next = first > 0, last < count - 1
        if has_prev and has_next:
            take_prev = ends[last] - starts[first - 1] <= ends[last + 1] - starts[first]
        elif has_prev or has_next:
            take_prev = has_prev
        else:
            break
        if take_prev:
            first -= 1
            order.append(first)
        else:
            last += 1
            order.append(last)
    return Clip(float(starts[first]), float(ends[last]), tuple(order))


def sample_clips(starts: Sequence[float], ends: Sequence[float], n_pair: int, min_time: float,
                 rng: np.random.Generator) -> list[Clip]:
    """``n_pair`` captions drawn with replacement, each grown to ``min_time`` (MCN)."""
    if len(starts) == 0:
        raise ValueError("no captions to sample clips from")
    chosen = rng.integers(0, len(starts), size=n_pair)
    return [grow_clip(starts, ends, int(i), min_time) for i in chosen]


def _rows(start: float, end: float, rate: float, length: int, inclusive: bool) -> slice:
    first = max(0, int(start * rate))
    if math.isinf(end):
        return slice(first, length)
    return slice(first, int(end * rate) + (1 if inclusive else 0))


def pool_rows(features: np.ndarray, start: float, end: float, fps: float) -> np.ndarray:
    """Rows of the window, max-pooled over time and L2-normalised (zeros for an empty window)."""
    window = features[_rows(start, end, fps, len(features), inclusive=True)]
    pooled = np.zeros(features.shape[1], dtype=np.float32)
    if len(window):
        pooled = window.max(axis=0).astype(np.float32)
        norm = float(np.linalg.norm(pooled))
        if norm > 0:
            pooled /= norm
    return pooled


def video_item(features: np.ndarray | Mapping[str, np.ndarray], start: float, end: float,
               fps: float = VIDEO_FEATURES_PER_SECOND) -> dict[str, np.ndarray]:
    """Video features -> {"video": (dim,) float32}.

    ``features`` is one (rows, dim) array at ``fps`` rows per second, or MCN's streams
    ``{"2d": (seconds, 2048), "3d": (1.5 x seconds, 2048)}``: each stream is pooled and L2-normalised
    on its own, then they are concatenated in the order 2D, 3D (MCN's 4,096-d input).
    """
    if isinstance(features, Mapping):
        parts = [pool_rows(features[stream], start, end, VIDEO_STREAM_RATES[stream])
                 for stream in VIDEO_STREAM_RATES if stream in features]
        return {"video": np.concatenate(parts)}
    return {"video": pool_rows(features, start, end, fps)}


def audio_item(spectrogram: np.ndarray, start: float, end: float, audio_frames: int,
               frames_per_second: float = AUDIO_FRAMES_PER_SECOND) -> dict[str, np.ndarray]:
    """(n_mels, frames) log-mel -> {"audio": (n_mels, audio_frames) float16, "nframes": real frames}."""
    window = spectrogram[:, _rows(start, end, frames_per_second, spectrogram.shape[1], inclusive=False)]
    window = window[:, :audio_frames]
    out = np.zeros((spectrogram.shape[0], audio_frames), dtype=np.float16)
    out[:, : window.shape[1]] = window
    return {"audio": out, "nframes": np.int64(window.shape[1])}


def clip_tokens(text: Mapping[str, np.ndarray], clip: Clip, field: str = "vectors") -> np.ndarray:
    """One per-token field (``vectors``: one word vector per token) of the clip's captions,
    concatenated in merge order."""
    offsets = text["offsets"]
    values = text[field]
    parts = [values[offsets[i]: offsets[i + 1]] for i in clip.captions]
    return np.concatenate(parts) if parts else values[:0]


def text_item(token_vectors: np.ndarray, max_words: int, word_dim: int | None = None) -> dict[str, np.ndarray]:
    """Word vectors of a clip's tokens -> {"words": (max_words, word_dim) float32, "mask": (max_words,) bool}."""
    token_vectors = np.asarray(token_vectors, dtype=np.float32)
    if token_vectors.ndim != 2:
        raise ValueError(f"token vectors must be (tokens, word_dim), got shape {token_vectors.shape}")
    dim = token_vectors.shape[1] if word_dim is None else word_dim
    if token_vectors.shape[1] != dim:
        raise ValueError(f"word vectors have {token_vectors.shape[1]} dimensions; the model takes {dim}")
    token_vectors = token_vectors[:max_words]
    words = np.zeros((max_words, dim), dtype=np.float32)
    words[: len(token_vectors)] = token_vectors
    mask = np.zeros(max_words, dtype=bool)
    mask[: len(token_vectors)] = True
    return {"words": words, "mask": mask}


def _window(start: float, end: float, rate: float, length: int, inclusive: bool) -> tuple[int, int]:
    """``_rows`` as (first, stop) indices of an axis of ``length``, by Python's slicing rules."""
    first, stop, _ = _rows(start, end, rate, length, inclusive).indices(length)
    return first, max(first, stop)


def as_float32(array: np.ndarray) -> np.ndarray:
    """``array.astype(np.float32)`` (exact for float16); torch converts float16 ~25x faster than numpy."""
    if array.dtype == np.float32:
        return array
    if array.dtype == np.float16 and array.dtype.isnative and array.flags.writeable and array.flags.c_contiguous:
        out = np.empty(array.shape, np.float32)
        torch.from_numpy(out).copy_(torch.from_numpy(array))
        return out
    return array.astype(np.float32)


def pool_clips(features: np.ndarray, clips: Sequence[Clip], fps: float, out: np.ndarray) -> None:
    """``pool_rows`` of every clip, into ``out`` (n_clips, dim): the rows the clips span are converted
    to float32 once, each window max-pooled, then every row L2-normalised (norms as np.linalg.norm)."""
    windows = [_window(clip.start, clip.end, fps, len(features), inclusive=True) for clip in clips]
    pooled = np.zeros((len(clips), features.shape[1]), dtype=np.float32)
    used = [(first, stop) for first, stop in windows if stop > first]
    if used:
        low, high = min(first for first, _ in used), max(stop for _, stop in used)
        rows = as_float32(features[low:high])
        for row, (first, stop) in zip(pooled, windows):
            if stop > first:
                np.maximum.reduce(rows[first - low:stop - low], axis=0, out=row)
    norms = np.sqrt(np.array([row.dot(row) for row in pooled], dtype=np.float32))
    pooled /= np.where(norms > 0, norms, np.float32(1))[:, None]  # a zero (or NaN) norm: left as is
    out[...] = pooled


def video_clips(features: np.ndarray | Mapping[str, np.ndarray], clips: Sequence[Clip], out: np.ndarray,
                fps: float = VIDEO_FEATURES_PER_SECOND) -> None:
    """``video_item`` of every clip, into ``out`` (n_clips, video_dim) float32."""
    if not isinstance(features, Mapping):
        pool_clips(features, clips, fps, out)
        return
    column = 0
    for stream in VIDEO_STREAM_RATES:
        if stream in features:
            dim = features[stream].shape[1]
            pool_clips(features[stream], clips, VIDEO_STREAM_RATES[stream], out[:, column:column + dim])
            column += dim
    if column != out.shape[1]:
        raise ValueError(f"video features have {column} dimensions in all; the batch takes {out.shape[1]}")


def audio_clips(spectrogram: np.ndarray, clips: Sequence[Clip], audio_frames: int, out: np.ndarray,
                nframes: np.ndarray, frames_per_second: float = AUDIO_FRAMES_PER_SECOND) -> None:
    """``audio_item`` of every clip, into ``out`` (n_clips, n_mels, audio_frames) and ``nframes`` (n_clips,)."""
    length = spectrogram.shape[1]
    for c, clip in enumerate(clips):
        first, stop = _window(clip.start, clip.end, frames_per_second, length, inclusive=False)
        kept = min(stop - first, audio_frames)
        out[c, :, :kept] = spectrogram[:, first:first + kept]
        out[c, :, kept:] = 0
        nframes[c] = kept


def text_clips(text: Mapping[str, np.ndarray], vocabulary: np.ndarray, clips: Sequence[Clip], max_words: int,
               words: np.ndarray, mask: np.ndarray) -> None:
    """``text_item(clip_tokens(...))`` of every clip, into ``words`` (n_clips, max_words, word_dim) and
    ``mask`` (n_clips, max_words), from the token ids and the (n_words, word_dim) ``vocabulary`` they
    index: the first ``max_words`` tokens of the clip's captions in merge order, one gather for all."""
    offsets, token_ids = text["offsets"].tolist(), text["token_ids"]
    ids = np.zeros(mask.shape, dtype=np.int64)
    mask[...] = False
    for c, clip in enumerate(clips):
        kept = 0
        for i in clip.captions:
            part = token_ids[offsets[i]:offsets[i + 1]][:max_words - kept]
            ids[c, kept:kept + len(part)] = part
            kept += len(part)
            if kept == max_words:
                break
        mask[c, :kept] = True
    words[mask] = vocabulary[ids[mask]]
    words[~mask] = 0


def stack_items(items: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-clip dicts -> one dict of arrays with a leading clip axis."""
    return {key: np.stack([item[key] for item in items]) for key in items[0]}


def collate(items: Sequence[Mapping[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Per-clip dicts (video_item / audio_item / text_item) -> the tensor batch MCN.embed takes."""
    return {key: torch.from_numpy(value) for key, value in stack_items(items).items()}


def flatten_pairs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A training batch (videos, n_pair, ...) -> (videos * n_pair, ...), one row per clip."""
    return {key: value.reshape(-1, *value.shape[2:]) for key, value in batch.items()}
