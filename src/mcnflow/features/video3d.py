"""``mcnflow extract video3d``: 3D ResNeXt-101 features, 1.5 rows per second, for one shard of normalized videos.

The same inputs as ``mcnflow extract video`` (the shard's normalize ledger; :func:`.video.plan_shard`
decides which videos are extracted and which are ``no_media``) and the same resumable life
(:class:`mcnflow.core.shard_stage.ShardRun`: each finished video is a part in the shard's work
directory, then a journal row; the shard's HDF5 file is assembled from the parts at the end, then
the feature ledger is written).

Pipeline: DataLoader worker processes decode whole videos ahead of the model with ffmpeg
(``fps=24,scale=<short side 112>,crop=112:112:x:y`` -> raw RGB24; the reference recipe's own filter
chain, see :mod:`.resnext3d`), the main process runs :class:`.resnext3d.ClipEncoder` on batches of
16-frame clips and stores float16 ``(n_clips, 2048)`` per video.

Rows: a constant-rate video of ``d`` seconds decodes to ``T = floor(24 d + 0.5)`` frames (what the
``fps`` filter gives; at least 1, see :mod:`.frames`) and gives ``ceil(T / 16)`` rows: a partial last
clip is completed with black frames and counts. Row ``k`` covers frames ``16k .. 16k + 15``, i.e.
seconds ``[k / 1.5, (k + 1) / 1.5)``. Example: 4 s -> 96 frames -> 6 rows; 4.3 s -> 103 frames -> 7 rows.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mcnflow.core.config import ConfigError, add_settings_arguments, canonical_json, settings_from_args
from mcnflow.core.ledger import read_ledger
from mcnflow.core.media_probe import MediaProbeError, ffmpeg_path, last_meaningful_line, probe
from mcnflow.core.status import FeatureStatus
from mcnflow.features import frames as frames_module
from mcnflow.features.video import (ShardFrames, VideoJob, add_shard_arguments, feature_outcome, finish_shard_run,
                                   keep_item, plan_shard, start_shard_run)

log = logging.getLogger(__name__)

STAGE = "features.video3d"
SETTINGS_KEYS = ("weights", "blocks", "fps", "short_side", "crop", "clip_frames", "batch_size", "device",
                 "decode_workers", "seed", "l2_normalize", "compression")
FINGERPRINT_KIND = "video3d"  # parts of a 2D and a 3D run never pass for each other


# --- settings --------------------------------------------------------------------------------------

def check_settings(settings: Mapping[str, Any]) -> dict:
    """The settings must be exactly features.video3d plus features.compression (no silent defaults)."""
    missing = [k for k in SETTINGS_KEYS if k not in settings]
    unknown = sorted(set(settings) - set(SETTINGS_KEYS))
    if missing:
        raise ConfigError(f"video3d settings: missing key(s) {', '.join(missing)} "
                          "(features.video3d plus features.compression)")
    if unknown:
        raise ConfigError(f"video3d settings: unknown key(s) {', '.join(unknown)}; allowed keys: "
                          + ", ".join(SETTINGS_KEYS))
    if not settings["fps"] > 0:
        raise ConfigError(f"config key '{STAGE}.fps': {settings['fps']!r} must be > 0")
    for key in ("batch_size", "clip_frames", "crop", "short_side"):
        if int(settings[key]) < 1:
            raise ConfigError(f"config key '{STAGE}.{key}': {settings[key]!r} must be >= 1")
    from mcnflow.features.resnext3d import LAYERS_101

    if len(settings["blocks"]) != 4 or min(settings["blocks"]) < 1:
        raise ConfigError(f"config key '{STAGE}.blocks': {list(settings['blocks'])}: four stages of >= 1 block each")
    if str(settings["weights"]) != "none" and tuple(settings["blocks"]) != LAYERS_101:
        raise ConfigError(f"config key '{STAGE}.blocks': {list(settings['blocks'])} is not ResNeXt-101's "
                          f"{list(LAYERS_101)}; a checkpoint ({settings['weights']}) holds ResNeXt-101")
    if int(settings["crop"]) > int(settings["short_side"]):
        raise ConfigError(f"config key '{STAGE}.crop': {settings['crop']!r} is larger than "
                          f"'{STAGE}.short_side' {settings['short_side']!r} (the crop is taken from the scaled frame)")
    return dict(settings)


def video3d_settings(args: argparse.Namespace) -> dict:
    """The ``features.video3d`` stage settings (features.video3d + features.compression, see mcnflow.core.plan)."""
    return check_settings(settings_from_args(args, STAGE))


def recipe_from_settings(settings: Mapping[str, Any]):
    from mcnflow.features.resnext3d import Recipe3D

    return Recipe3D(fps=float(settings["fps"]), short_side=int(settings["short_side"]),
                    crop=int(settings["crop"]), clip_frames=int(settings["clip_frames"]))


# --- decoding --------------------------------------------------------------------------------------

def expected_rows(duration: float, fps: float = 24.0, clip_frames: int = 16) -> int:
    """Rows a constant-rate video of ``duration`` seconds gives: ``ceil(floor(d * fps + 0.5) / clip_frames)``."""
    return -(-frames_module.expected_frames(duration, fps) // int(clip_frames))


def decode_clip_frames(path: str | Path, fps: float = 24.0, short_side: int = 112,
                       crop: int = 112) -> frames_module.DecodedVideo:
    """Frames of ``path`` at ``fps``, short side scaled to ``short_side``, centre-cropped to ``crop``:
    uint8 ``(T, crop, crop, 3)``. ffmpeg crops after scaling, in RGB (the same pixels as cropping the
    scaled frame afterwards). A video shorter than half a frame period gives its first frame."""
    from mcnflow.features.resnext3d import crop_box

    path = Path(path)
    try:
        info = probe(path)
    except MediaProbeError as exc:
        raise frames_module.DecodeError(exc.reason) from None
    if not info.has_video or not info.width or not info.height:
        raise frames_module.DecodeError("no video stream")
    width, height = frames_module.output_size(info.width, info.height, short_side)
    x, y = crop_box(width, height, crop)
    chain = f"scale={width}:{height},crop={crop}:{crop}:{x}:{y}"
    frames = _ffmpeg_rgb(path, f"fps={fps},{chain}", [], crop)
    if frames.shape[0] == 0:
        frames = _ffmpeg_rgb(path, chain, ["-frames:v", "1"], crop)
    return frames_module.DecodedVideo(frames=frames, duration=float(info.duration or 0.0),
                                      source_width=info.width, source_height=info.height)


def _ffmpeg_rgb(path: Path, video_filter: str, extra: list[str], size: int) -> np.ndarray:
    command = [frames_module.FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", ffmpeg_path(path),
               "-an", "-sn", "-vf", video_filter, *extra, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise frames_module.DecodeError(f"ffmpeg failed: {last_meaningful_line(done.stderr, path)}")
    frame_bytes = size * size * 3
    if len(done.stdout) % frame_bytes:
        raise frames_module.DecodeError(f"ffmpeg wrote {len(done.stdout)} bytes, not a multiple of one "
                                        f"{size}x{size} RGB frame ({frame_bytes} bytes)")
    return np.frombuffer(bytearray(done.stdout), dtype=np.uint8).reshape(-1, size, size, 3)


class ShardClipFrames(ShardFrames):
    """ShardFrames whose videos are decoded for the 3D network: resized, then centre-cropped square."""

    def __init__(self, jobs: Sequence[VideoJob], fps: float, short_side: int, crop: int):
        super().__init__(jobs, fps, short_side)
        self.crop = crop

    def decode(self, path: str | Path) -> frames_module.DecodedVideo:
        return decode_clip_frames(path, self.fps, self.short_side, self.crop)


# --- the shard ---------------------------------------------------------------------------------

def root_attrs(settings: Mapping[str, Any], encoder) -> dict:
    """What every 3D shard file says about how its features were made."""
    from mcnflow.features.resnext3d import FEATURE_DIM, MODEL_NAME

    weights, recipe = encoder.weights, encoder.recipe
    attrs = {key: settings[key] for key in SETTINGS_KEYS if key != "weights"}
    attrs.update({
        "features": "3d",
        "weights": weights.description,   # e.g. "none (random init, ...): NOT pretrained features"
        "weights_setting": settings["weights"],
        "pretrained": weights.pretrained,
        "model": MODEL_NAME,
        "feature_dim": FEATURE_DIM,
        "rows_per_second": float(recipe.rows_per_second),
        "sampling": f"ffmpeg fps={settings['fps']} filter, then non-overlapping clips of {recipe.clip_frames} "
                    f"frames: row k = frames {recipe.clip_frames}k .. {recipe.clip_frames}k+{recipe.clip_frames - 1}, "
                    f"seconds [k/{recipe.rows_per_second:g}, (k+1)/{recipe.rows_per_second:g})",
        "padding": "the last clip is completed with black frames (0 on the 0-255 scale, before normalization); "
                   f"rows = ceil(frames / {recipe.clip_frames})",
        "resize": f"short side {recipe.short_side}, long side int(long*{recipe.short_side}/short), then centre "
                  f"crop {recipe.crop}x{recipe.crop} at (int((w-{recipe.crop})/2), int((h-{recipe.crop})/2))",
        "preprocess": "(x - preprocess_mean) / preprocess_std per RGB channel on 0-255 values",
        "preprocess_mean": np.asarray(recipe.mean, dtype=np.float64),
        "preprocess_std": np.asarray(recipe.std, dtype=np.float64),
        "stored_dtype": "float16",
        "compute_device": encoder.device.type,
        "precision": encoder.precision,
        "settings": canonical_json(dict(settings)),
    })
    return attrs


def extract_shard(normalize_rows: Sequence[Mapping[str, str]], corpus: str, shard: int | str,
                  output: str | Path, ledger_path: str | Path, settings: Mapping[str, Any],
                  progress: bool = True, encoder=None) -> list[dict]:
    """Extract the 3D features of one shard; return the feature-ledger rows (also written to ``ledger_path``).

    ``encoder``: an already built :class:`.resnext3d.ClipEncoder` with the same settings (tests use a
    shallower one). Resumable like ``extract video``.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from mcnflow.core.device import resolve_device
    from mcnflow.features.resnext3d import ClipEncoder, ResNeXt3DWeights
    from mcnflow.features.store import parts_fingerprint, write_part

    settings = check_settings(settings)
    if shutil.which(frames_module.FFMPEG) is None or shutil.which("ffprobe") is None:
        raise RuntimeError("ffmpeg and ffprobe must be on PATH to extract video features")
    output, ledger_path = Path(output), Path(ledger_path)
    plan = plan_shard(normalize_rows)
    recipe = recipe_from_settings(settings)
    if encoder is None:
        weights = ResNeXt3DWeights.resolve(str(settings["weights"]), int(settings["seed"]), tuple(settings["blocks"]))
        encoder = ClipEncoder(weights, resolve_device(str(settings["device"]), f"{STAGE}.device"),
                              bool(settings["l2_normalize"]), int(settings["batch_size"]), recipe)
    elif encoder.recipe != recipe:
        raise ValueError(f"the encoder's recipe {encoder.recipe} is not the settings' {recipe}")
    attrs = root_attrs(settings, encoder)
    fingerprint = parts_fingerprint(FINGERPRINT_KIND, attrs, normalize_rows)
    run, jobs = start_shard_run(plan, ledger_path, output, fingerprint, corpus, shard)

    expected = sum(expected_rows(job.duration, recipe.fps, recipe.clip_frames) for job in jobs if job.duration)
    loader = DataLoader(ShardClipFrames(jobs, recipe.fps, recipe.short_side, recipe.crop), batch_size=None,
                        shuffle=False, num_workers=int(settings["decode_workers"]), collate_fn=keep_item)
    started = time.monotonic()
    computed = {"videos": 0, "rows": 0}
    with tqdm(total=expected or None, unit="clip", desc=f"video3d {corpus}/{shard}", disable=not progress,
              dynamic_ncols=True) as bar:
        for item in (loader if jobs else ()):
            video_id = item["video_id"]
            if item["status"] != FeatureStatus.OK:
                run.record(feature_outcome(video_id, item["status"], item["message"]))
                log.warning("%s: %s: %s", video_id, item["status"], item["message"])
                continue
            frames: torch.Tensor = item["frames"]
            features = encoder.encode(frames).astype(np.float16)
            video_attrs = {key: item[key] for key in ("duration", "n_frames", "source_checksum", "source",
                                                      "source_width", "source_height")}
            video_attrs.update(n_clips=len(features),
                               padded_frames=len(features) * recipe.clip_frames - item["n_frames"],
                               frame_width=recipe.crop, frame_height=recipe.crop)
            write_part(run.part_path(video_id), features, video_attrs,
                       meta={"fingerprint": fingerprint, **item["source_identity"]})
            run.record(feature_outcome(video_id, FeatureStatus.OK, length=len(features)))
            computed["videos"] += 1
            computed["rows"] += len(features)
            bar.update(len(features))
    elapsed = time.monotonic() - started

    rows = finish_shard_run(run, plan, output, corpus, shard, attrs, settings["compression"])
    n_ok = sum(r["status"] == FeatureStatus.OK for r in rows)
    log.info("%s/%s: %d of %d videos ok; computed %d clips of %d video(s) in %.1f s (%.2f clips/s) -> %s",
             corpus, shard, n_ok, len(rows), computed["rows"], computed["videos"], elapsed,
             computed["rows"] / max(elapsed, 1e-9), output)
    return rows


# --- CLI -------------------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_shard_arguments(parser, "3D ")
    add_settings_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"\d+", args.shard):
        raise ConfigError(f"--shard {args.shard!r}: expected digits such as 00003")
    settings = video3d_settings(args)
    normalize_rows = read_ledger(args.normalize_ledger)
    extract_shard(normalize_rows, args.corpus, args.shard, args.output, args.ledger, settings,
                  progress=not args.quiet)
    return 0
