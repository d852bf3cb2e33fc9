"""What a media file holds, read with ffprobe: duration, frame size and rate, audio rate and channels.

Stages use :func:`probe` to decide what to do with an input (no video stream? audio present?) and to
verify what ffmpeg wrote. ffprobe is called directly rather than through ``ffmpeg.probe`` because
ffmpeg-python 0.2.0 cannot pass a timeout.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

FFPROBE = "ffprobe"

# ffmpeg prefixes log lines with "[demuxer @ 0x55d0c...]"; the address changes every run.
_CONTEXT_ADDRESS = re.compile(r"\[([^\]@]+?) @ 0x[0-9a-f]+\]\s*")
# Lines that only summarize an earlier, more specific line.
_GENERIC_LINES = ("conversion failed!", "exiting normally", "invalid data found when processing input")


class MediaProbeError(RuntimeError):
    """ffprobe could not read the file; the message names the file and ffprobe's reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class MediaInfo:
    """Facts about one media file. Video/audio fields are None when that stream is absent."""

    path: str
    format_name: str
    size: int                       # bytes
    duration: float | None          # seconds: the container's, else the longest stream's
    has_video: bool                 # a real video stream (cover-art pictures do not count)
    video_stream_index: int | None  # ffprobe stream index, usable as an ffmpeg map selector
    video_codec: str | None
    width: int | None
    height: int | None
    sample_aspect_ratio: Fraction | None  # pixel shape; None when unknown ("0:1" or absent)
    rotation: int                   # degrees the player turns the picture (phone videos); 0 if none
    pix_fmt: str | None
    frame_rate: str | None          # as ffprobe reports it, e.g. "30/1" or "30000/1001"
    fps: float | None
    video_duration: float | None
    n_frames: int | None            # frame count the container records (mp4 does); None otherwise
    has_audio: bool
    audio_stream_index: int | None
    audio_codec: str | None
    audio_rate: int | None          # Hz
    audio_channels: int | None

    @property
    def display_size(self) -> tuple[float, float] | None:
        """(width, height) as shown: stretched by the pixel aspect ratio, turned by the rotation.

        ffmpeg applies both when decoding (it auto-rotates), so filters see a picture of this shape.
        """
        if not self.width or not self.height:
            return None
        width, height = float(self.width * (self.sample_aspect_ratio or 1)), float(self.height)
        return (height, width) if self.rotation % 180 == 90 else (width, height)


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def ffmpeg_path(path: str | Path) -> str:
    """``path`` as an ffmpeg/ffprobe argument: absolute, so a name that starts with "-" is not read as
    an option and one with a colon is not read as a protocol ("a:b.mp4")."""
    return str(Path(path).absolute())


def parse_rate(text: str | None) -> Fraction | None:
    """``"30000/1001"`` -> Fraction; None for ffprobe's "unknown" forms ("0/0", "N/A", absent)."""
    if not text:
        return None
    try:
        rate = Fraction(text.replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None


def last_meaningful_line(stderr: str | bytes, path: str | Path | None = None) -> str:
    """The most specific error ffmpeg/ffprobe printed: the last line that is not a generic summary.

    Memory addresses are dropped so the same failure gives the same message on every run, and the
    input path prefix is dropped because the ledger row already names the video.
    """
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", errors="replace")
    lines = []
    for raw in stderr.splitlines():
        line = _CONTEXT_ADDRESS.sub(lambda m: f"[{m.group(1).strip()}] ", raw).strip()
        if path is not None and line.startswith(f"{path}: "):
            line = line[len(str(path)) + 2:]
        if line:
            lines.append(line)
    for line in reversed(lines):
        if not line.lower().startswith(_GENERIC_LINES) and not line.lower().endswith(_GENERIC_LINES):
            return line
    return lines[-1] if lines else "no error message"


def _rotation(stream: dict) -> int:
    """Rotation from the display matrix (ffmpeg >= 5) or the older ``rotate`` tag, in [0, 360)."""
    for side_data in stream.get("side_data_list") or []:
        if "rotation" in side_data:
            return round(_number(side_data["rotation"]) or 0) % 360
    return round(_number((stream.get("tags") or {}).get("rotate")) or 0) % 360


def _video_stream(streams: list[dict]) -> dict | None:
    for stream in streams:
        # mp4/mkv may carry a cover picture as a one-frame "video" stream; it is not the video.
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get("attached_pic"):
            return stream
    return None


def _audio_stream(streams: list[dict]) -> dict | None:
    return next((s for s in streams if s.get("codec_type") == "audio"), None)


def media_info_from_ffprobe(path: str | Path, report: dict) -> MediaInfo:
    """Build :class:`MediaInfo` from ffprobe's ``-show_format -show_streams -of json`` output."""
    fmt = report.get("format") or {}
    streams = report.get("streams") or []
    video = _video_stream(streams)
    audio = _audio_stream(streams)

    stream_durations = [d for d in (_number(s.get("duration")) for s in streams) if d is not None]
    duration = _number(fmt.get("duration"))
    if duration is None and stream_durations:
        duration = max(stream_durations)

    frame_rate = fps = None
    width = height = None
    sar = None
    if video is not None:
        width, height = _int(video.get("width")), _int(video.get("height"))
        # avg_frame_rate is the true mean rate; r_frame_rate is the fallback when the container lacks it.
        for key in ("avg_frame_rate", "r_frame_rate"):
            rate = parse_rate(video.get(key))
            if rate is not None:
                frame_rate, fps = video[key], float(rate)
                break
        sar = parse_rate(video.get("sample_aspect_ratio"))

    return MediaInfo(
        path=str(path),
        format_name=fmt.get("format_name", ""),
        size=_int(fmt.get("size")) or Path(path).stat().st_size,
        duration=duration,
        has_video=video is not None,
        video_stream_index=_int(video.get("index")) if video else None,
        video_codec=video.get("codec_name") if video else None,
        width=width,
        height=height,
        sample_aspect_ratio=sar,
        rotation=_rotation(video) if video else 0,
        pix_fmt=video.get("pix_fmt") if video else None,
        frame_rate=frame_rate,
        fps=fps,
        video_duration=_number(video.get("duration")) if video else None,
        n_frames=_int(video.get("nb_frames")) if video else None,
        has_audio=audio is not None,
        audio_stream_index=_int(audio.get("index")) if audio else None,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_rate=_int(audio.get("sample_rate")) if audio else None,
        audio_channels=_int(audio.get("channels")) if audio else None,
    )


def probe(path: str | Path, timeout: float | None = None) -> MediaInfo:
    """Probe ``path`` with ffprobe; raise :class:`MediaProbeError` if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise MediaProbeError(path, "no such file")
    if path.stat().st_size == 0:
        raise MediaProbeError(path, "empty file (0 bytes)")
    command = [FFPROBE, "-v", "error", "-show_format", "-show_streams", "-of", "json", ffmpeg_path(path)]
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MediaProbeError(path, f"ffprobe did not finish within {timeout} s") from None
    if done.returncode != 0:
        raise MediaProbeError(path, last_meaningful_line(done.stderr, ffmpeg_path(path)))
    try:
        report = json.loads(done.stdout.decode("utf-8", errors="replace") or "{}")
    except json.JSONDecodeError as exc:
        raise MediaProbeError(path, f"ffprobe printed invalid JSON ({exc})") from None
    return media_info_from_ffprobe(path, report)
