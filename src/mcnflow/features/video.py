"""``mcnflow extract video``: ResNet-152 features, one row per second, for one shard of normalized videos.

Pipeline: DataLoader worker processes decode whole videos ahead of the model (ffmpeg, 1 fps, short side
224, see :mod:`.frames`); the main process cuts the frames of consecutive videos into batches of
``batch_size`` (videos are batched *across*, so the model never waits for one short video), runs
:class:`.resnet.FrameEncoder`, and splits the rows back per video. A finished video is written as
float16 ``(seconds, 2048)`` to its own part in the shard's work directory (atomically) and then
journaled (:class:`mcnflow.core.shard_stage.ShardRun`), so the rerun of a killed job extracts only
the videos it had not finished. At the end the shard's HDF5 file is assembled from the parts
(:func:`.store.assemble_shard`: temporary name, renamed when complete); the feature ledger is
written atomically afterwards.

Videos that normalize did not produce are recorded as ``no_media``; a video that cannot be decoded is
an ``error`` row, and the shard goes on.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mcnflow.core.checksum import file_sha256
from mcnflow.core.config import ConfigError, add_settings_arguments, canonical_json, settings_from_args
from mcnflow.core.ledger import FEATURE_COLUMNS, read_ledger
from mcnflow.core.shard_stage import ShardRun
from mcnflow.core.status import FeatureStatus, NormalizeStatus
from mcnflow.features import frames as frames_module
from mcnflow.features.store import source_identity

log = logging.getLogger(__name__)

SETTINGS_KEYS = ("fps", "short_side", "weights", "l2_normalize", "batch_size", "device",
                 "decode_workers", "seed", "compression")
# keys a settings object may leave out (their default); the config schema fills them in
OPTIONAL_KEYS = {"compile": False}


# --- settings and inputs ---------------------------------------------------------------------------

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


def video_settings(args: argparse.Namespace) -> dict:
    """The ``features.video`` stage settings (features.video + features.compression, see mcnflow.core.plan)."""
    return check_settings(settings_from_args(args, "features.video"))


@dataclass(frozen=True)
class VideoJob:
    video_id: str
    path: str
    duration: float | None  # from the normalize ledger; only used to size the progress bar


@dataclass
class ShardPlan:
    order: list[str]                              # every video of the shard, ledger order
    jobs: list[VideoJob]                          # the ones to extract
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (video_id, status, message)


def _float_or_none(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def plan_shard(normalize_rows: Sequence[Mapping[str, str]]) -> ShardPlan:
    """Normalize-ledger rows -> videos to extract, and ``no_media`` outcomes for the others."""
    plan = ShardPlan(order=[], jobs=[])
    seen: set[str] = set()
    for row in normalize_rows:
        video_id = row["video_id"]
        if video_id in seen:
            raise ValueError(f"normalize ledger lists video {video_id!r} twice")
        seen.add(video_id)
        plan.order.append(video_id)
        status = row.get("status", "")
        if status == NormalizeStatus.OK and row.get("path"):
            plan.jobs.append(VideoJob(video_id, row["path"], _float_or_none(row.get("duration"))))
        else:
            reason = f"normalize status {status or '(none)'}"
            if row.get("message"):
                reason += f": {row['message']}"
            elif status == NormalizeStatus.OK:
                reason += " but the ledger gives no path"
            plan.skipped.append((video_id, FeatureStatus.NO_MEDIA, reason))
    return plan


# --- decoding in worker processes -------------------------------------------------------------------

class ShardFrames:
    """Map-style dataset for a DataLoader: item i = the decoded frames of video i, or why there are none.

    Runs in DataLoader worker processes; never raises for one bad video (that would stop the shard).
    A subclass changes how a video is decoded (:meth:`decode`); the item and its error rows stay these.
    """

    def __init__(self, jobs: Sequence[VideoJob], fps: float, short_side: int, keyframes_only: bool = False):
        self.jobs = list(jobs)
        self.fps = fps
        self.short_side = short_side
        self.keyframes_only = keyframes_only

    def __len__(self) -> int:
        return len(self.jobs)

    def decode(self, path: str | Path) -> frames_module.DecodedVideo:
        return frames_module.decode_frames(path, self.fps, self.short_side, self.keyframes_only)

    def __getitem__(self, index: int) -> dict:
        import torch

        job = self.jobs[index]
        item: dict[str, Any] = {"video_id": job.video_id, "path": job.path, "status": FeatureStatus.OK,
                                "message": "", "frames": None}
        try:
            identity = source_identity(job.path)  # before decoding: a later change shows on resume
            decoded = self.decode(job.path)
            checksum = file_sha256(job.path)
        except Exception as exc:  # noqa: BLE001 - any failure is this video's error row, not the shard's
            message = str(exc) if isinstance(exc, frames_module.DecodeError) else f"{type(exc).__name__}: {exc}"
            item.update(status=FeatureStatus.ERROR, message=f"{job.path}: {message}")
            return item
        if decoded.n_frames == 0:
            item.update(status=FeatureStatus.TOO_SHORT,
                        message=f"{job.path}: no frame decoded (duration {decoded.duration:g} s)")
            return item
        item.update(frames=torch.from_numpy(decoded.frames), duration=decoded.duration,
                    n_frames=decoded.n_frames, source_checksum=checksum, source=Path(job.path).name,
                    source_width=decoded.source_width, source_height=decoded.source_height,
                    source_identity=identity)
        return item


def keep_item(item: dict) -> dict:
    """collate_fn: items are whole videos already (module level so worker processes can pickle it)."""
    return item


# --- batching across videos ---------------------------------------------------------------------

@dataclass
class _Video:
    """One video whose rows are being computed; stored when ``remaining`` reaches 0."""

    video_id: str
    features: np.ndarray          # float32 (n_frames, 2048), filled batch by batch
    attrs: dict
    remaining: int
    source: dict = field(default_factory=dict)  # store.source_identity of the input (checked on resume)


class BatchPipeline:
    """Queues the frames of many videos by frame size and runs the encoder on full batches.

    On CUDA the result of batch k is copied to pinned host memory asynchronously and collected
    only after batch k+1 has been queued, so the GPU is not idle while the host stores results.
    """

    def __init__(self, encoder, batch_size: int, on_video_done: Callable[[_Video], None],
                 on_rows: Callable[[int], None] = lambda n: None):
        import torch

        self._torch = torch
        self.encoder = encoder
        self.batch_size = int(batch_size)
        self.on_video_done = on_video_done
        self.on_rows = on_rows
        self.cuda = encoder.device.type == "cuda"
        # frame size (H, W) -> queue of (video, first row, uint8 frames); frames of different sizes
        # cannot share a batch
        self._queues: dict[tuple[int, int], deque] = {}
        self._queued: dict[tuple[int, int], int] = {}
        self._in_flight: tuple | None = None

    def add(self, video: _Video, frames) -> None:
        key = (int(frames.shape[1]), int(frames.shape[2]))
        self._queues.setdefault(key, deque()).append((video, 0, frames))
        self._queued[key] = self._queued.get(key, 0) + int(frames.shape[0])
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
                self.on_video_done(video)
        self.on_rows(offset)


# --- the shard ---------------------------------------------------------------------------------

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


def feature_outcome(video_id: str, status: str, message: str = "", length: int = 0) -> dict:
    return {"video_id": video_id, "status": status, "message": message, "length": length}


def start_shard_run(plan: ShardPlan, ledger_path: Path, output: Path, fingerprint: str, corpus: str,
                    shard: int | str) -> tuple[ShardRun, list[VideoJob]]:
    """The shard's run (a part is trusted only with this fingerprint and its video's source unchanged),
    with the plan's skipped videos recorded; and the jobs still to extract. Shared by the 2D and 3D stages."""
    from mcnflow.features.store import part_row_trusted

    sources = {job.video_id: job.path for job in plan.jobs}
    run = ShardRun(ledger_path, FEATURE_COLUMNS, outputs=[output], fingerprint=fingerprint,
                   trust=lambda video_id, row: part_row_trusted(run, video_id, row, "video",
                                                                fingerprint=fingerprint, source=sources.get(video_id)))
    for video_id, status, message in plan.skipped:
        if run.settled(video_id) is None:
            run.record(feature_outcome(video_id, status, message))
    jobs = [job for job in plan.jobs if run.settled(job.video_id) is None]
    log.info("%s/%s: %d video(s) to extract, %d outcome(s) kept from an earlier run",
             corpus, shard, len(jobs), run.resumed)
    return run, jobs


def finish_shard_run(run: ShardRun, plan: ShardPlan, output: Path, corpus: str, shard: int | str, attrs: dict,
                     compression: Any) -> list[dict]:
    """Assemble the shard file from the parts of its ok videos, then write the ledger (only after the
    file is in place: a ledger never describes a missing file); return the ledger rows."""
    from mcnflow.features.store import assemble_shard

    entries = []
    for video_id in plan.order:
        status = str(run.rows[video_id]["status"])
        entries.append((video_id, status, run.part_path(video_id) if status == FeatureStatus.OK else None))
    assemble_shard(output, "video", corpus, int(shard), entries, attrs=attrs, compression=compression)
    return run.finish(plan.order)


def extract_shard(normalize_rows: Sequence[Mapping[str, str]], corpus: str, shard: int | str,
                  output: str | Path, ledger_path: str | Path, settings: Mapping[str, Any],
                  progress: bool = True, encoder=None, keyframes_only: bool = False) -> list[dict]:
    """Extract one shard; return the feature-ledger rows (also written to ``ledger_path``).

    ``keyframes_only``: the normalized files have keyframes aligned to the sampler
    (``normalize.align_keyframes``): decode only those (the same frames, several times faster).

    ``encoder`` lets a caller reuse an already built :class:`.resnet.FrameEncoder` with the same settings.
    Resumable: each finished video goes to a part in the shard's work directory, then to the journal;
    the rerun of a killed job extracts only the videos whose part it cannot trust.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from mcnflow.features.store import parts_fingerprint, write_part

    settings = check_settings(settings)
    if shutil.which(frames_module.FFMPEG) is None or shutil.which("ffprobe") is None:
        raise RuntimeError("ffmpeg and ffprobe must be on PATH to extract video features")
    output, ledger_path = Path(output), Path(ledger_path)
    plan = plan_shard(normalize_rows)
    if encoder is None:
        encoder = build_encoder(settings)
    fps = float(settings["fps"])
    attrs = root_attrs(settings, encoder)
    # parts of a killed run are reused only for the same settings, weights, device and inputs
    fingerprint = parts_fingerprint("video", attrs, normalize_rows)

    run, jobs = start_shard_run(plan, ledger_path, output, fingerprint, corpus, shard)
    expected = sum(frames_module.expected_frames(job.duration, fps) for job in jobs if job.duration)
    loader = DataLoader(ShardFrames(jobs, fps, int(settings["short_side"]), keyframes_only), batch_size=None,
                        shuffle=False, num_workers=int(settings["decode_workers"]), collate_fn=keep_item)
    started = time.monotonic()
    computed = {"videos": 0, "rows": 0}

    def store(video: _Video) -> None:
        features = video.features.astype(np.float16)
        write_part(run.part_path(video.video_id), features, video.attrs,
                   meta={"fingerprint": fingerprint, **video.source})
        run.record(feature_outcome(video.video_id, FeatureStatus.OK, length=len(features)))
        computed["videos"] += 1
        computed["rows"] += len(features)

    with tqdm(total=expected or None, unit="frame", desc=f"video {corpus}/{shard}", disable=not progress,
              dynamic_ncols=True) as bar:
        pipeline = BatchPipeline(encoder, int(settings["batch_size"]), store, bar.update)
        for item in (loader if jobs else ()):
            video_id = item["video_id"]
            if item["status"] != FeatureStatus.OK:
                run.record(feature_outcome(video_id, item["status"], item["message"]))
                log.warning("%s: %s: %s", video_id, item["status"], item["message"])
                continue
            frames: torch.Tensor = item["frames"]
            height, width = int(frames.shape[1]), int(frames.shape[2])
            video_attrs = {key: item[key] for key in ("duration", "n_frames", "source_checksum", "source",
                                                      "source_width", "source_height")}
            video_attrs.update(frame_width=width, frame_height=height)
            video = _Video(video_id, np.empty((int(frames.shape[0]), encoder.model.feature_dim), np.float32),
                           video_attrs, int(frames.shape[0]), item["source_identity"])
            pipeline.add(video, frames)
        pipeline.flush()
    elapsed = time.monotonic() - started

    rows = finish_shard_run(run, plan, output, corpus, shard, attrs, settings["compression"])
    n_ok = sum(r["status"] == FeatureStatus.OK for r in rows)
    log.info("%s/%s: %d of %d videos ok; computed %d rows of %d video(s) in %.1f s (%.1f frames/s) -> %s",
             corpus, shard, n_ok, len(rows), computed["rows"], computed["videos"], elapsed,
             computed["rows"] / max(elapsed, 1e-9), output)
    return rows


# --- CLI -------------------------------------------------------------------------------------------

def add_shard_arguments(parser: argparse.ArgumentParser, kind: str = "") -> None:
    """The arguments of a video-feature shard job (2D; ``kind`` "3D " for the 3D stage's help texts)."""
    parser.add_argument("--normalize-ledger", required=True, metavar="TSV",
                        help="the shard's normalize ledger (rows with status ok and a path are extracted)")
    parser.add_argument("--corpus", required=True, help="corpus name (recorded in the file)")
    parser.add_argument("--shard", required=True, help="shard id, e.g. 00003")
    parser.add_argument("--output", required=True, metavar="H5", help=f"the shard's {kind}HDF5 feature file")
    parser.add_argument("--ledger", required=True, metavar="TSV", help=f"the shard's {kind}feature ledger")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_shard_arguments(parser)
    parser.add_argument("--keyframes-only", action="store_true",
                        help="decode keyframes only: for normalized files made with normalize.align_keyframes "
                             "(keyframes at the frames the fps sampler takes), the same frames, ~4x faster")
    add_settings_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"\d+", args.shard):
        raise ConfigError(f"--shard {args.shard!r}: expected digits such as 00003")
    settings = video_settings(args)
    normalize_rows = read_ledger(args.normalize_ledger)
    extract_shard(normalize_rows, args.corpus, args.shard, args.output, args.ledger, settings,
                  progress=not args.quiet, keyframes_only=args.keyframes_only)
    return 0
