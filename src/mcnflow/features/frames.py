"""Frame sampling and sizes of the HowTo100M 2D extractor, and a file decode that follows them.

``mcnflow media`` samples and scales the frames in its one decode graph (:mod:`mcnflow.media.decode`)
with :func:`output_size`; :func:`decode_frames` decodes a file on its own, for checks outside the
pipeline (tests, benchmarks, e.g. reading a kept normalized file).

ffmpeg does the sampling and the resize: ``-vf fps=<fps>,scale=<w>:<h>`` then raw RGB24 on a pipe.
The ``fps`` filter runs first so only the kept frames are scaled and turned into arrays (never all
30 frames of each second). The filter gives input frame *n* the output time ``round(n * fps / rate)``
and keeps, per output time, the last input frame that rounds to it: output frame *k* is the last
input frame before time ``(k + 0.5) / fps`` (measured at 30 -> 1 fps: frames 14, 44, 74, ...). A
constant-rate video of duration ``d`` gives ``floor(d * fps + 0.5)`` frames (the filter rounds the
end time to the nearest output tick). Videos shorter than half a period get 0 frames that way; for
them :func:`decode_frames` falls back to the first frame, so every decodable video gives >= 1 row.

``keyframes_only``: normalized files made with ``normalize.align_keyframes`` have a keyframe exactly
at each frame this sampler keeps (see :func:`mcnflow.normalize.keyframe_options`), so decoding only
the keyframes (``-skip_frame nokey``, measured 3.8x faster) gives the very same frames.

Resize rule (``video_feature_extractor:video_loader.py:_get_output_dim``): the short side becomes
``short_side`` and the long side ``int(long * short_side / short)``, aspect kept, no crop, e.g.
454x256 -> 397x224. Raw RGB24 output needs no even dimensions, so the recipe's odd widths are kept.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mcnflow.core.media_probe import MediaProbeError, last_meaningful_line, probe

FFMPEG = "ffmpeg"


class DecodeError(RuntimeError):
    """ffmpeg could not decode the video; the message says why."""


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray      # uint8 (n_frames, height, width, 3), RGB
    duration: float         # seconds, as ffprobe reports it
    source_width: int
    source_height: int

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after scaling the short side to ``short_side``, keeping the aspect (official recipe)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size {width}x{height} is not positive")
    if height >= width:
        return short_side, int(height * short_side / width)
    return int(width * short_side / height), short_side


def expected_frames(duration: float, fps: float) -> int:
    """Rows the ``fps`` filter gives for a constant-rate video of ``duration`` seconds (at least 1)."""
    return max(1, int(np.floor(duration * fps + 0.5)))


def _run_ffmpeg(path: Path, video_filter: str, extra: list[str], width: int, height: int,
                input_options: tuple[str, ...] = ()) -> np.ndarray:
    command = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", *input_options, "-i", str(path),
               "-an", "-sn", "-vf", video_filter, *extra, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise DecodeError(f"ffmpeg failed: {last_meaningful_line(done.stderr, path)}")
    frame_bytes = width * height * 3
    if len(done.stdout) % frame_bytes:
        # a torn last frame (ffmpeg stopped mid-write): refuse rather than store a shifted image
        raise DecodeError(f"ffmpeg wrote {len(done.stdout)} bytes, not a multiple of one "
                          f"{width}x{height} RGB frame ({frame_bytes} bytes)")
    # bytearray: a writable buffer, so torch.from_numpy can share it without a warning
    return np.frombuffer(bytearray(done.stdout), dtype=np.uint8).reshape(-1, height, width, 3)


def decode_frames(path: str | Path, fps: float, short_side: int, keyframes_only: bool = False) -> DecodedVideo:
    """Frames of ``path`` sampled at ``fps`` and scaled to ``short_side``: uint8 (T, H, W, 3).

    ``keyframes_only``: decode only the keyframes (a file with keyframes aligned to this sampler, see
    the module docstring); a file that is not aligned gives far fewer frames and raises DecodeError.
    """
    path = Path(path)
    try:
        info = probe(path)
    except MediaProbeError as exc:
        raise DecodeError(exc.reason) from None
    if not info.has_video or not info.width or not info.height:
        raise DecodeError("no video stream")
    width, height = output_size(info.width, info.height, short_side)
    scale = f"scale={width}:{height}"
    frames = _run_ffmpeg(path, f"fps={fps},{scale}", [], width, height,
                         ("-skip_frame", "nokey") if keyframes_only else ())
    if keyframes_only and info.duration and frames.shape[0] < expected_frames(info.duration, fps) - 1:
        raise DecodeError(f"keyframes-only decode gave {frames.shape[0]} frames, {expected_frames(info.duration, fps)} "
                          f"expected: the file's keyframes are not aligned to a {fps} fps sampler")
    if frames.shape[0] == 0:
        # shorter than half a sampling period: row 0 is the first frame (the one at time 0)
        frames = _run_ffmpeg(path, scale, ["-frames:v", "1"], width, height)
    return DecodedVideo(frames=frames, duration=float(info.duration or 0.0),
                        source_width=info.width, source_height=info.height)
