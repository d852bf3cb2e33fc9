"""ResNet-152 frame features (``features.video``): settings, the encoder, batching across videos, and
what the shard file says about them.

``mcnflow media`` (:class:`mcnflow.media.consumers.Frames2D`) decodes the frames; this module turns
them into features: :class:`BatchPipeline` cuts the frames of consecutive videos into batches of
``batch_size`` (videos are batched *across*, so the model never waits for one short video), runs
:class:`.resnet.FrameEncoder`, and hands each video's rows back when its last batch is done.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from mcnflow.core.config import ConfigError, canonical_json

SETTINGS_KEYS = ("fps", "short_side", "weights", "l2_normalize", "batch_size", "device",
                 "decode_workers", "seed", "compression")
# keys a settings object may leave out (their default); the config schema fills them in
OPTIONAL_KEYS = {"compile": False}

# video_id, float32 (n_frames, feature_dim), the attrs given to BatchPipeline.add
VideoDone = Callable[[str, np.ndarray, dict], None]


# --- settings --------------------------------------------------------------------------------------

def check_settings(settings: Mapping[str, Any]) -> dict:
    """The settings must be exactly features.video plus features.compression (no silent defaults)."""
    missing = [k for k in SETTINGS_KEYS if k not in settings]
    unknown = sorted(set(settings) - set(SETTINGS_KEYS) - set(OPTIONAL_KEYS))
    if missing:
        raise ConfigError(f"video settings: missing key(s) {', '.join(missing)} "
                          "(features.video plus features.compression)")
    if unknown:
        raise ConfigError(f"video settings: unknown key(s) {', '.join(unknown)}; allowed keys: "
                          + ", ".join((*SETTINGS_KEYS, *OPTIONAL_KEYS)))
    if not settings["fps"] > 0:
        raise ConfigError(f"config key 'features.video.fps': {settings['fps']!r} must be > 0")
    if int(settings["batch_size"]) < 1:
        raise ConfigError(f"config key 'features.video.batch_size': {settings['batch_size']!r} must be >= 1")
    return dict(settings)


# --- batching across videos ---------------------------------------------------------------------

@dataclass
class _Rows:
    """One video whose rows are being computed; handed back when ``remaining`` reaches 0."""

    video_id: str
    features: np.ndarray          # float32 (n_frames, feature_dim), filled batch by batch
    attrs: dict
    remaining: int


class BatchPipeline:
    """Queues the frames of many videos by frame size and runs the encoder on full batches.

    ``add(video_id, frames, attrs)`` queues one video's uint8 frames ``(n, H, W, 3)``;
    ``on_video_done(video_id, features, attrs)`` gets its float32 ``(n, feature_dim)`` rows once its
    last batch is done; :meth:`flush` runs what is left. On CUDA the result of batch k is copied to
    pinned host memory asynchronously and collected only after batch k+1 has been queued, so the
    GPU is not idle while the host stores results.
    """

    def __init__(self, encoder, batch_size: int, on_video_done: VideoDone):
        import torch

        self._torch = torch
        self.encoder = encoder
        self.batch_size = int(batch_size)
        self.on_video_done = on_video_done
        self.cuda = encoder.device.type == "cuda"
        # frame size (H, W) -> queue of (video, first row, uint8 frames); frames of different sizes
        # cannot share a batch
        self._queues: dict[tuple[int, int], deque] = {}
        self._queued: dict[tuple[int, int], int] = {}
        self._in_flight: tuple | None = None

    def add(self, video_id: str, frames, attrs: dict) -> None:
        n = int(frames.shape[0])
        if n == 0:
            raise ValueError(f"{video_id}: no frames to encode (the decode gives at least the first frame)")
        video = _Rows(video_id, np.empty((n, self.encoder.model.feature_dim), np.float32), attrs, n)
        key = (int(frames.shape[1]), int(frames.shape[2]))
        self._queues.setdefault(key, deque()).append((video, 0, frames))
        self._queued[key] = self._queued.get(key, 0) + n
        while self._queued[key] >= self.batch_size:
            self._run(key, self.batch_size)

    def flush(self) -> None:
        """Run the partial batches left at the end of the shard and collect every result."""
        for key in list(self._queues):
            while self._queued[key] > 0:
                self._run(key, min(self.batch_size, self._queued[key]))
        self._collect()

    def _take(self, key: tuple[int, int], n: int):
        queue = self._queues[key]
        parts, owners, taken = [], [], 0
        while taken < n:
            video, row0, frames = queue[0]
            k = min(n - taken, int(frames.shape[0]))
            parts.append(frames[:k])
            owners.append((video, row0, k))
            if k == frames.shape[0]:
                queue.popleft()
            else:
                queue[0] = (video, row0 + k, frames[k:])
            taken += k
        self._queued[key] -= n
        return parts, owners

    def _run(self, key: tuple[int, int], n: int) -> None:
        torch = self._torch
        parts, owners = self._take(key, n)
        if self.cuda and parts[0].device.type == "cuda":
            batch = parts[0] if len(parts) == 1 else torch.cat(parts)  # decoded on the GPU already
        elif self.cuda:
            # pinned staging buffer: the host-to-device copy is asynchronous
            batch = torch.empty((n, *parts[0].shape[1:]), dtype=torch.uint8, pin_memory=True)
            torch.cat(parts, out=batch)
        else:
            batch = parts[0] if len(parts) == 1 else torch.cat(parts)
        features = self.encoder(batch)
        ready = None
        if self.cuda:
            host = torch.empty(features.shape, dtype=features.dtype, pin_memory=True)
            host.copy_(features, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
            features = host
        self._collect()  # the previous batch, while this one runs
        self._in_flight = (features, ready, owners)

    def _collect(self) -> None:
        if self._in_flight is None:
            return
        features, ready, owners = self._in_flight
        self._in_flight = None
        if ready is not None:
            ready.synchronize()
        rows = features.numpy()
        offset = 0
        for video, row0, k in owners:
            video.features[row0:row0 + k] = rows[offset:offset + k]
            offset += k
            video.remaining -= k
            if video.remaining == 0:
                self.on_video_done(video.video_id, video.features, video.attrs)


# --- the encoder and the shard file's attributes ----------------------------------------------------

def build_encoder(settings: Mapping[str, Any]):
    """The :class:`.resnet.FrameEncoder` of checked ``features.video`` settings."""
    from mcnflow.core.device import resolve_device
    from mcnflow.features.resnet import FrameEncoder, ResNet152Weights

    weights = ResNet152Weights.resolve(str(settings["weights"]), int(settings["seed"]))
    return FrameEncoder(weights, resolve_device(str(settings["device"]), "features.video.device"),
                        bool(settings["l2_normalize"]), compile=bool(settings.get("compile", False)),
                        batch_size=int(settings["batch_size"]))


def root_attrs(settings: Mapping[str, Any], encoder) -> dict:
    """What every shard file says about how its features were made."""
    from mcnflow.features.resnet import FEATURE_DIM, MODEL_NAME

    weights = encoder.weights
    attrs = {key: settings[key] for key in (*SETTINGS_KEYS, *OPTIONAL_KEYS) if key != "weights" and key in settings}
    attrs.update({
        "weights": weights.description,       # e.g. "none (random init, ...): NOT pretrained features"
        "weights_setting": settings["weights"],
        "pretrained": weights.pretrained,
        "model": MODEL_NAME,
        "feature_dim": FEATURE_DIM,
        "rows_per_second": float(settings["fps"]),
        "sampling": f"ffmpeg fps={settings['fps']} filter (row k = the last frame whose time rounds to k/fps)",
        "resize": f"short side {settings['short_side']}, long side int(long*{settings['short_side']}/short), no crop",
        "preprocess": "x/255, then (x - preprocess_mean) / preprocess_std per RGB channel",
        "preprocess_mean": np.asarray(weights.preprocess.mean, dtype=np.float64),
        "preprocess_std": np.asarray(weights.preprocess.std, dtype=np.float64),
        "stored_dtype": "float16",
        "compute_device": encoder.device.type,
        "precision": encoder.precision,
        "settings": canonical_json(dict(settings)),
    })
    return attrs
