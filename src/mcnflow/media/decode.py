"""One ffmpeg process per video: the download is decoded once and every consumer gets its stream.

The filter graph applies the normalization of :mod:`mcnflow.normalize` in memory::

    [video] fps=30 -> split -+-> pad/crop/stretch to 454x256, setsar=1 -> x264 .mp4   (normalize.keep: true)
                             |   or the null muxer, only counted                   (normalize.keep: false)
                             +-> fps=1  -> pad/crop/stretch, setsar=1 -> scale 397x224 -> RGB24 pipe (ResNet-152)
                             +-> fps=24 -> pad/crop/stretch, setsar=1 [-> scale, crop] -> RGB24 pipe (3D ResNeXt)
    [audio] ----------------+-> AAC 16 kHz mono in the .mp4                          (keep: true)
                             +-> 16 kHz mono float32 pipe (log-mel)

The frame-rate filters run *before* the per-frame resize, so only the frames a branch keeps are
scaled (the per-frame filters commute with ``fps``, which only picks and retimes frames: the test
suite proves the frames bit-identical to resizing first). A model therefore sees the normalization's
own frames before the x264 round trip (which changes them by ~1.8/255 on average), and with
``keep: false`` nothing is encoded at all.

Each pipe is an inherited file descriptor (``pipe:N``) read by its own thread into one bounded
queue, so ffmpeg never blocks on a pipe nobody reads and a slow consumer slows ffmpeg down instead of
filling memory. :class:`DecodeRun` yields ``(tap name, numpy chunk)`` in arrival order.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import ffmpeg
import numpy as np

from mcnflow.core.media_probe import MediaInfo, ffmpeg_path
from mcnflow.normalize import NormalizeSettings, output_options, picture_filters

FFMPEG = "ffmpeg"
AUDIO_SAMPLE_BYTES = 4  # float32 little endian


@dataclass(frozen=True)
class VideoTap:
    """Raw RGB24 frames of the normalized picture, sampled at ``fps`` (ffmpeg's ``fps`` filter),
    then optionally scaled to ``size`` = (width, height) and cropped to ``crop`` = (w, h, x, y)."""

    name: str
    fps: float
    size: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None
    chunk_frames: int = 32           # frames per chunk handed to the consumer
    first_frame_fallback: bool = True  # a video shorter than half a period gives its first frame

    def frame_size(self, settings: NormalizeSettings) -> tuple[int, int]:
        """(width, height) of the frames this tap delivers."""
        if self.crop is not None:
            return self.crop[0], self.crop[1]
        if self.size is not None:
            return self.size
        return settings.width, settings.height

    def chunk_bytes(self, settings: NormalizeSettings) -> int:
        width, height = self.frame_size(settings)
        return width * height * 3 * self.chunk_frames


@dataclass(frozen=True)
class AudioTap:
    """The first audio stream as mono float32 at ``rate`` Hz (ffmpeg's default downmix and resampler,
    the same that make the normalized file's AAC track)."""

    name: str
    rate: int
    chunk_samples: int = 1 << 16

    def chunk_bytes(self, settings: NormalizeSettings) -> int:
        return self.chunk_samples * AUDIO_SAMPLE_BYTES


Tap = VideoTap | AudioTap


class DecodeError(RuntimeError):
    """ffmpeg failed or wrote something that is not whole frames; ``stderr`` is ffmpeg's."""

    def __init__(self, message: str, stderr: bytes = b""):
        super().__init__(message)
        self.stderr = stderr


def _tap_stream(tap: VideoTap, branch, info: MediaInfo, settings: NormalizeSettings):
    video = picture_filters(branch.filter("fps", fps=tap.fps), info, settings)
    if tap.size is not None:
        video = video.filter("scale", *tap.size)
    if tap.crop is not None:
        video = video.filter("crop", *tap.crop)
    return video


def build_command(info: MediaInfo, settings: NormalizeSettings, taps: Sequence[Tap], fds: dict[str, int],
                  *, encode_to: str | Path | None = None, progress_fd: int | None = None,
                  video: bool = True) -> list[str]:
    """The ffmpeg argument list of one decode (see the module docstring).

    ``fds``: tap name -> the inherited file descriptor ffmpeg writes it to. ``encode_to``: also write
    the normalized file there (normalize.keep). Without it the fps-converted stream goes to the
    null muxer so ``-progress`` (on ``progress_fd``) counts the normalized frames for verification;
    either way the first output is the normalized stream. ``video=False``: audio taps only, the video
    stream is not decoded at all (``media.decode: cuda`` decodes it on the GPU instead).
    """
    source = ffmpeg.input(ffmpeg_path(info.path), threads=settings.threads)
    video_taps = [tap for tap in taps if isinstance(tap, VideoTap)]
    audio_taps = [tap for tap in taps if isinstance(tap, AudioTap)]
    if audio_taps and not info.has_audio:
        raise ValueError(f"{info.path}: audio tap(s) {[t.name for t in audio_taps]} but the input has no audio")
    global_args = ["-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
                   "-filter_complex_threads", str(settings.threads)]
    if progress_fd is not None:
        global_args += ["-progress", f"pipe:{progress_fd}"]
    if not video:
        if video_taps or encode_to is not None or not audio_taps:
            raise ValueError("video=False decodes audio taps only")
        outputs = [ffmpeg.output(source[str(info.audio_stream_index)], f"pipe:{fds[tap.name]}",
                                 format="f32le", acodec="pcm_f32le", ac=1, ar=tap.rate) for tap in audio_taps]
        return ffmpeg.merge_outputs(*outputs).global_args(*global_args).overwrite_output().compile(cmd=FFMPEG)
    normalized = source[str(info.video_stream_index)].filter("fps", fps=settings.fps)
    count = 1 + len(video_taps)
    split = normalized.split() if count > 1 else None
    branches = [split[i] for i in range(count)] if split is not None else [normalized]

    outputs = []
    if encode_to is not None:
        streams = [picture_filters(branches[0], info, settings)]
        if info.has_audio:
            streams.append(source[str(info.audio_stream_index)])
        outputs.append(ffmpeg.output(*streams, ffmpeg_path(encode_to), **output_options(info, settings)))
    else:
        # counted only: the null muxer takes the frames by reference (no conversion, no encode)
        outputs.append(ffmpeg.output(branches[0], "-", format="null"))
    for tap, branch in zip(video_taps, branches[1:]):
        outputs.append(ffmpeg.output(_tap_stream(tap, branch, info, settings), f"pipe:{fds[tap.name]}",
                                     format="rawvideo", pix_fmt="rgb24"))
    for tap in audio_taps:
        outputs.append(ffmpeg.output(source[str(info.audio_stream_index)], f"pipe:{fds[tap.name]}",
                                     format="f32le", acodec="pcm_f32le", ac=1, ar=tap.rate))
    return (ffmpeg.merge_outputs(*outputs).global_args(*global_args).overwrite_output()
            .compile(cmd=FFMPEG))


def first_frame_command(info: MediaInfo, settings: NormalizeSettings, tap: VideoTap) -> list[str]:
    """ffmpeg arguments for the first normalized frame only (as the tap would scale and crop it)."""
    source = ffmpeg.input(ffmpeg_path(info.path), threads=settings.threads)
    video = picture_filters(source[str(info.video_stream_index)].filter("fps", fps=settings.fps), info, settings)
    if tap.size is not None:
        video = video.filter("scale", *tap.size)
    if tap.crop is not None:
        video = video.filter("crop", *tap.crop)
    out = ffmpeg.output(video, "pipe:", format="rawvideo", pix_fmt="rgb24", **{"frames:v": 1})
    return out.global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=FFMPEG)


def first_frame(info: MediaInfo, settings: NormalizeSettings, tap: VideoTap) -> np.ndarray:
    """uint8 (1, H, W, 3): the first normalized frame (a video too short for one sampled frame)."""
    done = subprocess.run(first_frame_command(info, settings, tap), capture_output=True, stdin=subprocess.DEVNULL)
    width, height = tap.frame_size(settings)
    if done.returncode != 0 or len(done.stdout) != width * height * 3:
        raise DecodeError(f"ffmpeg gave no first frame ({len(done.stdout)} bytes)", done.stderr)
    return np.frombuffer(bytearray(done.stdout), np.uint8).reshape(1, height, width, 3)


@dataclass
class DecodeResult:
    """What one finished decode reports besides the streams."""

    returncode: int
    stderr: bytes
    normalized_frames: int | None   # frames of the fps-converted (normalized) stream, from -progress
    sizes: dict[str, int] = field(default_factory=dict)  # tap name -> frames (video) or samples (audio)


def _read_exactly(handle, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        block = handle.read(size - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


class DecodeRun:
    """Run :func:`build_command` and iterate over ``(tap name, chunk)``; ``result`` is set at the end.

    Video chunks are uint8 ``(n, H, W, 3)``, audio chunks float32 ``(n,)``. Iterate to the end (or
    call :meth:`close`): an abandoned run kills ffmpeg.
    """

    def __init__(self, info: MediaInfo, settings: NormalizeSettings, taps: Sequence[Tap], *,
                 encode_to: str | Path | None = None, video: bool = True, queue_chunks: int = 8):
        self.info, self.settings, self.taps = info, settings, list(taps)
        names = [tap.name for tap in self.taps]
        if len(set(names)) != len(names):
            raise ValueError(f"tap names must be unique: {names}")
        self.encode_to = encode_to
        self.video = video
        self.result: DecodeResult | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_chunks))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._proc: subprocess.Popen | None = None
        self._progress: list[bytes] = []
        self._stderr: list[bytes] = []
        self._counts: dict[str, int] = {}
        self._failure: str | None = None

    # --- the reader threads -------------------------------------------------------------------

    def _reader(self, tap: Tap, handle) -> None:
        size = tap.chunk_bytes(self.settings)
        unit = (AUDIO_SAMPLE_BYTES if isinstance(tap, AudioTap)
                else tap.frame_size(self.settings)[0] * tap.frame_size(self.settings)[1] * 3)
        total = 0
        try:
            while not self._stop.is_set():
                block = _read_exactly(handle, size)
                if not block:
                    break
                total += len(block)
                if len(block) % unit:
                    self._failure = (f"ffmpeg wrote {total} bytes to {tap.name}, not a whole number of "
                                     f"{unit}-byte {'samples' if unit == AUDIO_SAMPLE_BYTES else 'frames'}")
                    break
                self._put((tap.name, block))
                if len(block) < size:
                    break
        finally:
            handle.close()
            self._counts[tap.name] = total // unit
            self._put((tap.name, None))

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _drain(self, handle, sink: list[bytes]) -> None:
        try:
            while block := handle.read(1 << 16):
                sink.append(block)
        finally:
            handle.close()

    # --- the run --------------------------------------------------------------------------------

    def _start(self) -> None:
        pipes: dict[str, tuple[int, int]] = {tap.name: os.pipe() for tap in self.taps}
        progress_r, progress_w = os.pipe()
        fds = {name: w for name, (_, w) in pipes.items()}
        command = build_command(self.info, self.settings, self.taps, fds, encode_to=self.encode_to,
                                progress_fd=progress_w, video=self.video)
        try:
            self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, pass_fds=[*fds.values(), progress_w])
        finally:
            for _, w in pipes.values():
                os.close(w)
            os.close(progress_w)
        for tap in self.taps:
            handle = os.fdopen(pipes[tap.name][0], "rb", buffering=0)
            self._threads.append(threading.Thread(target=self._reader, args=(tap, handle), daemon=True))
        self._threads.append(threading.Thread(target=self._drain, args=(self._proc.stderr, self._stderr),
                                              daemon=True))
        self._threads.append(threading.Thread(
            target=self._drain, args=(os.fdopen(progress_r, "rb", buffering=0), self._progress), daemon=True))
        for thread in self._threads:
            thread.start()

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        self._start()
        open_taps = {tap.name: tap for tap in self.taps}
        try:
            while open_taps:
                name, block = self._queue.get()
                if block is None:
                    open_taps.pop(name, None)
                    continue
                tap = open_taps[name]
                if isinstance(tap, AudioTap):
                    yield name, np.frombuffer(block, dtype="<f4")
                else:
                    width, height = tap.frame_size(self.settings)
                    # bytearray: writable, so torch.from_numpy can share it without a warning
                    yield name, np.frombuffer(bytearray(block), np.uint8).reshape(-1, height, width, 3)
        except BaseException:
            self.close()
            raise
        self._finish()

    def _finish(self) -> None:
        assert self._proc is not None
        returncode = self._proc.wait()
        for thread in self._threads:
            thread.join()
        stderr = b"".join(self._stderr)
        if self._failure:
            raise DecodeError(self._failure, stderr)
        self.result = DecodeResult(returncode=returncode, stderr=stderr,
                                   normalized_frames=_progress_frames(b"".join(self._progress)),
                                   sizes=dict(self._counts))

    def close(self) -> None:
        """Stop ffmpeg and the reader threads (an abandoned or failed run)."""
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self._proc.wait()
        for thread in self._threads:
            thread.join(timeout=5)


def _progress_frames(text: bytes) -> int | None:
    """The last ``frame=`` of ffmpeg's ``-progress`` report (the first output's video frames)."""
    frames = None
    for line in text.decode("ascii", "replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "frame":
            try:
                frames = int(value.strip())
            except ValueError:
                pass
    return frames


def collect(run: DecodeRun) -> dict[str, np.ndarray]:
    """Run to the end and concatenate each tap's chunks (for whole-video consumers and tests)."""
    parts: dict[str, list[np.ndarray]] = {tap.name: [] for tap in run.taps}
    for name, chunk in run:
        parts[name].append(chunk)
    out = {}
    for tap in run.taps:
        if parts[tap.name]:
            out[tap.name] = np.concatenate(parts[tap.name])
        elif isinstance(tap, AudioTap):
            out[tap.name] = np.zeros(0, np.float32)
        else:
            width, height = tap.frame_size(run.settings)
            out[tap.name] = np.zeros((0, height, width, 3), np.uint8)
    return out
