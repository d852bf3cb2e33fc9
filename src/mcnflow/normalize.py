"""The normalization: one frame size, frame rate and audio format for every download, and the checks
that say whether a video was normalized as configured.

``mcnflow media`` (:mod:`mcnflow.media`) runs it: each download is decoded once, and that decode
makes the normalized file (when ``normalize.keep`` is true), the 2D/3D video frames and the 16 kHz
audio, with this module's filters (:func:`picture_filters`, :func:`output_options`), probing
(:func:`probe_source`), failure classification (:func:`ffmpeg_failure`) and verification
(:func:`verify_file`, :func:`trusted_row`). A normalized file is ``normalize.width`` x ``height`` at a
constant ``fps``, H.264 yuv420p, AAC mono at ``audio_rate`` when the input has audio; a download that
cannot become one is a normalize-ledger row saying why. Only problems of the input become rows:
ffmpeg failing for a reason outside the input (a full disk, no memory) stops the job
(:class:`EnvironmentFailure`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from fractions import Fraction
from pathlib import Path
from typing import Mapping

from mcnflow.core.atomic import atomic_path
from mcnflow.core.config import ConfigError
from mcnflow.core.ids import is_valid_video_id
from mcnflow.core.ledger import NORMALIZE_STATUSES, read_ledger
from mcnflow.core.media_probe import MediaInfo, MediaProbeError, ffmpeg_path, last_meaningful_line, probe
from mcnflow.core.status import DownloadStatus, NormalizeStatus

log = logging.getLogger(__name__)

RESIZE_MODES = ("pad", "crop", "stretch")
OUTPUT_PIX_FMT = "yuv420p"  # what every H.264 decoder (and torchvision/PyAV) reads
OUTPUT_FORMAT = "mp4"       # given explicitly: the temporary name does not end in .mp4
# The encoder each allowed normalize.video_codec produces, as ffprobe names it.
CODEC_NAMES = {"libx264": "h264"}
# ffmpeg stderr fragments that mean the *input* could not be demuxed or decoded (-> corrupt, not error).
INPUT_FAILURE_MARKERS = (
    "invalid data found", "moov atom not found", "error while decoding", "partial file",
    "invalid nal unit", "error splitting the input", "could not find codec parameters",
    "corrupt", "truncat", "end of file",
)
# ffmpeg stderr fragments that mean the machine, not the input, failed: the job stops (no ledger row).
ENVIRONMENT_FAILURE_MARKERS = (
    "no space left on device", "disk quota exceeded", "cannot allocate memory", "read-only file system",
    "too many open files", "permission denied", "input/output error",
)
# Two frame rates are equal when they agree to this relative precision (ffprobe prints fractions).
FPS_REL_TOL = 1e-6
# Journal rows with this status are retried by a rerun: the cause may have been passing (disk full).
RETRIED_STATUSES = (NormalizeStatus.ERROR,)


@dataclasses.dataclass(frozen=True)
class NormalizeSettings:
    """config.yaml's ``normalize`` section (see the comments there for each key)."""

    width: int
    height: int
    fps: float
    audio_rate: int
    resize_mode: str
    video_codec: str
    preset: str
    crf: int
    audio_bitrate: str
    threads: int
    duration_tolerance: float
    # Keyframes exactly at the frames a ``sample_fps`` sampler (features.video.fps) takes, one closed
    # GOP per sampling period, so a later 2D re-extraction decodes keyframes only (see keyframe_options).
    align_keyframes: bool = True
    sample_fps: float = 1.0

    @classmethod
    def from_mapping(cls, settings: Mapping) -> "NormalizeSettings":
        optional = {"align_keyframes", "sample_fps"}
        missing = [name for name in cls.__dataclass_fields__ if name not in settings and name not in optional]
        if missing:
            raise ConfigError(f"config key 'normalize': missing key(s) {', '.join(missing)}")
        values = {name: settings[name] for name in cls.__dataclass_fields__ if name in settings}
        if values["resize_mode"] not in RESIZE_MODES:
            raise ConfigError(f"config key 'normalize.resize_mode': {values['resize_mode']!r} is not allowed; "
                              f"allowed values: {', '.join(map(repr, RESIZE_MODES))}")
        if values["video_codec"] not in CODEC_NAMES:
            raise ConfigError(f"config key 'normalize.video_codec': {values['video_codec']!r} is not allowed; "
                              f"allowed values: {', '.join(map(repr, CODEC_NAMES))}")
        if "sample_fps" in values and not float(values["sample_fps"]) > 0:
            raise ConfigError(f"normalize settings: sample_fps {values['sample_fps']!r} must be > 0 "
                              "(it is features.video.fps)")
        return cls(**values)


class NormalizeFailure(Exception):
    """One video could not be normalized because of its input; ``status`` is one of
    ledger.NORMALIZE_STATUSES (its ledger row)."""

    def __init__(self, status: str, message: str):
        assert status in NORMALIZE_STATUSES and status != NormalizeStatus.OK, status
        super().__init__(message)
        self.status = status
        self.message = message


class EnvironmentFailure(RuntimeError):
    """ffmpeg failed for a reason outside the input (disk, memory, permissions): the job stops, and the
    video gets no ledger row (a rerun on a healthy machine normalizes it)."""


# --- the ffmpeg command -----------------------------------------------------------------------

def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def scaled_size(display_size: tuple[float, float], width: int, height: int, cover: bool) -> tuple[int, int]:
    """The even size that fits inside (``cover``: covers) width x height with the display aspect kept.

    Rounding to the *nearest* even size keeps a 16:9 source (255.4 rows at 454 wide) at the full
    454x256 instead of flooring it to 254 rows and padding 1-pixel bars; the limiting side is exact,
    so the result never exceeds (``cover``: never falls short of) the target.
    """
    display_width, display_height = display_size
    pick = max if cover else min
    factor = pick(width / display_width, height / display_height)
    return _even(display_width * factor), _even(display_height * factor)


def picture_filters(video, info: MediaInfo, settings: NormalizeSettings):
    """Resize to exactly width x height (as resize_mode says) with square pixels: the per-frame part
    of the normalization (it commutes with the frame-rate filters, which only pick frames; the decode
    graph, :mod:`mcnflow.media.decode`, applies ``fps`` first)."""
    width, height = settings.width, settings.height
    if settings.resize_mode == "stretch":
        video = video.filter("scale", width, height)
    elif settings.resize_mode == "pad":
        # Sizes come from the probe's display size (pixel aspect and rotation applied) because the
        # scale filter's own force_original_aspect_ratio ignores the pixel aspect ratio.
        video = (video.filter("scale", *scaled_size(info.display_size, width, height, cover=False))
                 .filter("pad", width, height, "(ow-iw)/2", "(oh-ih)/2", color="black"))
    else:  # crop
        video = (video.filter("scale", *scaled_size(info.display_size, width, height, cover=True))
                 .filter("crop", width, height))  # crop centres by default
    return video.filter("setsar", 1)


def sampler_frame_indices_expr(fps: float, sample_fps: float) -> str:
    """An ffmpeg expression of ``n`` (frame number of a ``fps`` constant-rate stream) that is true
    exactly for the frames an ffmpeg ``fps=sample_fps`` filter (default ``round=near``) keeps.

    That filter gives input frame ``n`` the output time ``floor(n * sample_fps / fps + 0.5)`` and
    keeps, per output time, the *last* input frame that rounds to it (measured: at 30 -> 1 fps it
    keeps frames 14, 44, 74, ...): frame ``n`` is kept when frame ``n + 1`` rounds to a later time.
    Integer arithmetic (rates as fractions) so no floating-point tie is decided wrongly.
    """
    rate, sample = Fraction(fps).limit_denominator(1_000_000), Fraction(sample_fps).limit_denominator(1_000_000)
    ratio = sample / rate  # output ticks per input frame
    a, b = ratio.numerator, ratio.denominator
    # floor(n * a / b + 1/2) = floor((2 a n + b) / (2 b))
    def tick(n: str) -> str:
        return f"floor((2*{a}*({n})+{b})/{2 * b})"
    return f"gt({tick('n+1')},{tick('n')})"


def sampler_frame_indices(n_frames: int, fps: float, sample_fps: float) -> list[int]:
    """The frame numbers of a ``fps`` stream of ``n_frames`` frames that :func:`sampler_frame_indices_expr`
    selects (the same arithmetic, for tests and for decoders that pick frames by index)."""
    ratio = Fraction(sample_fps).limit_denominator(1_000_000) / Fraction(fps).limit_denominator(1_000_000)
    a, b = ratio.numerator, ratio.denominator
    return [n for n in range(n_frames) if (2 * a * (n + 1) + b) // (2 * b) > (2 * a * n + b) // (2 * b)]


def keyframe_options(settings: NormalizeSettings) -> dict:
    """x264 options of the normalized file: with ``align_keyframes`` a closed GOP per sampling period
    whose keyframe is the frame the ``sample_fps`` sampler takes (scene-cut keyframes off), so
    ``-skip_frame nokey`` + the same sampler gives exactly the sampler's frames; else x264's own GOPs.

    Frame 0 is always a keyframe too; the sampler drops it (a later keyframe rounds to the same time),
    so a keyframe-only decode followed by the ``fps`` filter still yields exactly the sampler's frames.
    """
    if not settings.align_keyframes:
        return {}
    period = Fraction(settings.fps).limit_denominator(1_000_000) / Fraction(settings.sample_fps).limit_denominator(1_000_000)
    # keyint above the period: x264 never adds a keyframe of its own between two forced ones
    return {"force_key_frames": f"expr:{sampler_frame_indices_expr(settings.fps, settings.sample_fps)}",
            "g": max(2, math.ceil(period) * 2), "sc_threshold": 0, "flags": "+cgop"}


def output_options(info: MediaInfo, settings: NormalizeSettings) -> dict:
    """The encoder and muxer options of the normalized file (shared with mcnflow.media's decode graph)."""
    options = dict(
        format=OUTPUT_FORMAT,
        vcodec=settings.video_codec, preset=settings.preset, crf=settings.crf, pix_fmt=OUTPUT_PIX_FMT,
        threads=settings.threads, movflags="+faststart", **keyframe_options(settings),
    )
    if info.has_audio:
        options.update(acodec="aac", ac=1, ar=settings.audio_rate, audio_bitrate=settings.audio_bitrate)
    else:
        options.update(an=None)
    return options


# --- verification -----------------------------------------------------------------------------

def verify_output(out: MediaInfo, settings: NormalizeSettings, *, duration: float | None, has_audio: bool,
                  duration_tolerance: float | None = None) -> list[str]:
    """What in ``out`` differs from the configured form of an input of ``duration`` seconds that
    has (or lacks) audio; an empty list means all is as configured.

    ``duration_tolerance`` defaults to ``settings.duration_tolerance``; ``duration`` None skips the
    duration check (some containers do not record one).
    """
    tolerance = settings.duration_tolerance if duration_tolerance is None else duration_tolerance
    problems: list[str] = []
    if not out.has_video:
        return ["output has no video stream"]
    if (out.width, out.height) != (settings.width, settings.height):
        problems.append(f"size {out.width}x{out.height}, expected {settings.width}x{settings.height}")
    if out.fps is None or not math.isclose(out.fps, settings.fps, rel_tol=FPS_REL_TOL):
        problems.append(f"frame rate {out.frame_rate}, expected {settings.fps}")
    if out.sample_aspect_ratio not in (None, Fraction(1)):
        problems.append(f"sample aspect ratio {out.sample_aspect_ratio}, expected 1")
    if out.rotation:
        problems.append(f"rotation {out.rotation} degrees, expected none")
    codec = CODEC_NAMES[settings.video_codec]
    if (out.video_codec, out.pix_fmt) != (codec, OUTPUT_PIX_FMT):
        problems.append(f"video {out.video_codec}/{out.pix_fmt}, expected {codec}/{OUTPUT_PIX_FMT}")
    if out.n_frames == 0:
        problems.append("output has no frames")

    problems += duration_problems(out.duration, settings, duration=duration, tolerance=tolerance)

    if has_audio:
        if not out.has_audio:
            problems.append("output has no audio stream, input has one")
        elif (out.audio_rate, out.audio_channels) != (settings.audio_rate, 1):
            problems.append(f"audio {out.audio_rate} Hz x {out.audio_channels} channel(s), "
                            f"expected {settings.audio_rate} Hz x 1")
    elif out.has_audio:
        problems.append("output has an audio stream, input has none")
    return problems


def duration_problems(out_duration: float | None, settings: NormalizeSettings, *, duration: float | None,
                      tolerance: float) -> list[str]:
    """The duration check of :func:`verify_output`: ``out_duration`` (what was made) against the input's
    ``duration`` (None: not checked) within ``tolerance`` seconds."""
    frame = 1.0 / settings.fps
    if duration is not None and duration < frame:
        # Shorter than one output frame: the fps filter still emits one frame; that is enough.
        if out_duration is None or out_duration < frame * (1 - FPS_REL_TOL):
            return [f"duration {out_duration} s, expected at least one frame ({frame:.6g} s)"]
    elif duration is not None:
        if out_duration is None or abs(out_duration - duration) > tolerance:
            return [f"duration {out_duration} s, expected {duration} s ± {tolerance} s"]
    return []


def output_problems(path: Path, row: Mapping[str, str], settings: NormalizeSettings) -> list[str]:
    """Why a journaled ``ok`` file can no longer be trusted (empty list: it still can)."""
    if not path.is_file():
        return [f"{path} is missing"]
    try:
        out = probe(path)
    except MediaProbeError as exc:
        return [str(exc)]
    try:
        recorded_duration = float(row["duration"])
    except ValueError:
        return [f"journal duration {row['duration']!r} is not a number"]
    # Still the file the journal recorded: same audio and, to within a frame, the same duration.
    return verify_output(out, settings, duration=recorded_duration, has_audio=row["has_audio"] == "true",
                         duration_tolerance=1.0 / settings.fps)


def trusted_row(row: Mapping[str, str], output: Path | None, settings: NormalizeSettings) -> bool:
    """Whether a normalize-journal row of an earlier (failed or killed) run stands, so the video is not
    normalized again: ``error`` rows are retried (the cause may have passed), the other failures
    stand (the same input fails the same way), and an ``ok`` row with a kept file (``output``; None
    with ``normalize.keep: false``) stands only while that file still probes as the row says. The
    journal is the only way a kept file is trusted: a file without a row is made again."""
    if row["status"] in RETRIED_STATUSES:
        return False
    if row["status"] != NormalizeStatus.OK or output is None:
        return True
    problems = output_problems(output, row, settings)
    if problems:
        log.info("%s: normalizing again, the kept file is not usable: %s", row["video_id"], "; ".join(problems))
    return not problems


# --- one video --------------------------------------------------------------------------------

def probe_source(source_path: str | Path) -> MediaInfo:
    """The facts of one download, or :class:`NormalizeFailure` with the ledger status of what is wrong
    with it (missing: error; zero bytes: empty_input; unreadable: corrupt; no video stream: no_video)."""
    source_path = Path(source_path)
    if not source_path.is_file():
        raise NormalizeFailure(NormalizeStatus.ERROR, f"input file is missing: {source_path}")
    if source_path.stat().st_size == 0:
        raise NormalizeFailure(NormalizeStatus.EMPTY_INPUT, f"zero-byte input: {source_path}")
    try:
        source = probe(source_path)
    except MediaProbeError as exc:
        raise NormalizeFailure(NormalizeStatus.CORRUPT, exc.reason) from None
    if not source.has_video:
        streams = "audio only" if source.has_audio else "no audio or video streams"
        raise NormalizeFailure(NormalizeStatus.NO_VIDEO, f"input has no video stream ({streams})")
    if source.display_size is None:
        raise NormalizeFailure(NormalizeStatus.CORRUPT, "the video stream reports no frame size")
    return source


def ffmpeg_failure(stderr: bytes, path: str | Path) -> NormalizeFailure:
    """The ledger failure of an ffmpeg run on ``path`` that exited non-zero: ``corrupt`` when its stderr
    says the input is bad, else ``error`` (retried by a rerun). Raises :class:`EnvironmentFailure`
    when it says the machine failed (disk full, no memory): that is no row of the video's."""
    message = last_meaningful_line(stderr, ffmpeg_path(path))
    text = stderr.decode("utf-8", errors="replace").lower()
    if any(marker in text for marker in ENVIRONMENT_FAILURE_MARKERS):
        raise EnvironmentFailure(f"ffmpeg failed on {path}: {message}")
    if any(marker in text for marker in INPUT_FAILURE_MARKERS):
        return NormalizeFailure(NormalizeStatus.CORRUPT, message)
    return NormalizeFailure(NormalizeStatus.ERROR, f"ffmpeg failed: {message}")


def verify_file(tmp: str | Path, source: MediaInfo, settings: NormalizeSettings) -> MediaInfo:
    """Probe a just-written normalized file and check it against ``source``; raise verify_failed if not."""
    try:
        result = probe(tmp)
    except MediaProbeError as exc:
        raise NormalizeFailure(NormalizeStatus.VERIFY_FAILED, f"output unreadable: {exc.reason}") from None
    problems = verify_output(result, settings, duration=source.duration, has_audio=source.has_audio)
    if problems:
        raise NormalizeFailure(NormalizeStatus.VERIFY_FAILED, "; ".join(problems))
    return result


def normalize_video(source_path: str | Path, output: str | Path, settings: NormalizeSettings) -> MediaInfo:
    """Normalize one file into ``output`` with the pipeline's decode graph (no feature taps); return the
    verified output's facts.

    Raises :class:`NormalizeFailure` (with a ledger status) if the input is bad or the result does not
    verify; ``output`` then does not exist and no temporary file is left behind.
    """
    from mcnflow.media.decode import DecodeRun, collect  # imported here: mcnflow.media.decode imports this module

    source_path, output = Path(source_path), Path(output)
    source = probe_source(source_path)
    with atomic_path(output) as tmp:
        run = DecodeRun(source, settings, [], encode_to=tmp)
        collect(run)
        if run.result.returncode != 0:
            raise ffmpeg_failure(run.result.stderr, source_path)
        result = verify_file(tmp, source, settings)
    return dataclasses.replace(result, path=str(output))


# --- ledger rows --------------------------------------------------------------------------------

def ok_row(video_id: str, output: Path, result: MediaInfo) -> dict:
    return dict(video_id=video_id, status=NormalizeStatus.OK, message="", has_audio=result.has_audio,
                duration=result.duration, width=result.width, height=result.height, fps=result.fps,
                path=str(output))


def failure_row(video_id: str, status: str, message: str) -> dict:
    return dict(video_id=video_id, status=status, message=message)


def _shard_order(download_rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Download rows, one per video id (first wins), in ledger order."""
    seen: dict[str, dict[str, str]] = {}
    for row in download_rows:
        if row["video_id"] in seen:
            log.warning("download ledger lists %s twice; using its first row", row["video_id"])
            continue
        seen[row["video_id"]] = row
    return list(seen.values())


def is_safe_id(video_id: str) -> bool:
    """The id becomes a file name: accept only ids that are safe as one (YouTube or local style)."""
    return is_valid_video_id(video_id, "youtube") or is_valid_video_id(video_id, "local")


def download_failure(download: Mapping[str, str]) -> dict | None:
    """The normalize-ledger row of a download row that gives nothing to normalize (unsafe id, not
    downloaded, no path), or None when there is a file to try."""
    video_id = download["video_id"]
    if not is_safe_id(video_id):
        return failure_row(video_id, NormalizeStatus.ERROR, f"unsafe video id {video_id!r}")
    if download["status"] != DownloadStatus.OK:
        return failure_row(video_id, NormalizeStatus.NOT_DOWNLOADED, f"download status: {download['status']}")
    if not download["path"]:
        return failure_row(video_id, NormalizeStatus.ERROR, "download ledger row is ok but has no path")
    return None


def read_download_ledger(download_ledger: str | Path) -> list[dict[str, str]]:
    """The shard's download rows, one per video id (first wins), checked to be a download ledger."""
    download_rows = read_ledger(download_ledger)
    if download_rows and not {"video_id", "status", "path"} <= set(download_rows[0]):
        raise ConfigError(f"{download_ledger}: not a download ledger (needs columns video_id, status, path)")
    return _shard_order(download_rows)
