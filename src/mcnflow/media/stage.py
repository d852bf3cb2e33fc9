"""``mcnflow media``: one job per shard that decodes each download once and writes, from that decode,
the normalize ledger, the 2D video features, the audio features, optionally the 3D video features,
and (``normalize.keep: true``) the normalized videos.

Per video, a decode worker (a DataLoader worker process) probes the download and classifies bad media
(:func:`mcnflow.normalize.probe_source`, :func:`mcnflow.normalize.ffmpeg_failure`; verification: ffprobe
of the kept file, or with ``keep: false`` the counted normalized frames and audio samples against the
input's duration), runs one ffmpeg process (:mod:`.decode`) and prepares each consumer's data
(:mod:`.consumers`). The main process runs the models, batching frames across videos, writes each
finished video's features to a part in the shard's work directory and journals its rows
(:class:`mcnflow.core.shard_stage.ShardRun`, one run per ledger). A video counts as done only when
every ledger of the job has a trusted row for it (:func:`mcnflow.normalize.trusted_row`,
:func:`mcnflow.features.store.part_row_trusted`), so the rerun of a failed or killed job redoes
exactly the videos it had not finished; a video whose normalized file is kept and journaled is decoded
again for its features but not encoded again. At the end the HDF5 files are assembled from the parts,
then the feature ledgers and the normalize ledger are written.

Failures: only a problem of the input becomes a ledger row (the download is missing, empty, not
decodable, has no video stream, or its normalization does not verify). A device error (CUDA, cuDNN,
out of memory), a machine failure (disk full) or a bug stops the job with the exception and a
non-zero exit, writing no row for the video it happened on; the journal keeps what was finished.

The normalized videos go to ``--videos-dir``, which the workflow does not declare as an output:
Snakemake deletes the outputs of a failed job, and these files are hours of encoding. The normalize
ledger's ``path`` column points at them; a file there without a trusted journal or ledger row is
never used.

Ledger rows: normalize (with ``keep: false`` the path is empty: nothing was encoded; duration, size and
fps describe the in-memory normalization). Feature ledgers: ``no_media`` for a video that did not
normalize, ``no_audio`` for one without an audio stream, ``too_short`` below one log-mel window,
``ok`` otherwise.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from torch.utils.data import IterableDataset

from mcnflow.core.atomic import atomic_path
from mcnflow.core.checksum import file_sha256
from mcnflow.core.config import ConfigError, add_settings_arguments, canonical_json, settings_from_args
from mcnflow.core.ledger import FEATURE_COLUMNS, NORMALIZE_COLUMNS, NORMALIZE_STATUSES
from mcnflow.core.media_probe import MediaInfo
from mcnflow.core.shard_stage import ShardRun
from mcnflow.core.status import FeatureStatus, NormalizeStatus
from mcnflow.core.streams import GPU, NO_GPU, media_streams, stream
from mcnflow.features.store import source_identity
from mcnflow.media import decode as decode_module
from mcnflow.media.consumers import Consumer, ConsumerSkip, VideoContext, consumer_class
from mcnflow.normalize import (NormalizeFailure, NormalizeSettings, download_failure, duration_problems,
                               failure_row, ffmpeg_failure, is_safe_id, ok_row, probe_source,
                               read_download_ledger, trusted_row, verify_file)

log = logging.getLogger(__name__)

STAGE = "media"
DECODE_CHOICES = ("cpu", "cuda")
SOURCE_DESCRIPTION = ("mcnflow media: one decode of the download; the normalization's frames and audio "
                      "in memory (before any x264/AAC encode)")


# --- settings ------------------------------------------------------------------------------------

# a worker's "prepared" for a stream whose frames the main process decodes on the GPU (media.decode: cuda)
DECODED_ON_GPU = "gpu"
# the stream whose settings section sets the number of decode workers (features.video.decode_workers)
DECODE_WORKERS_STREAM = "video"


@dataclass(frozen=True)
class MediaSettings:
    normalize: NormalizeSettings
    keep: bool
    decode: str                      # cpu | cuda
    streams: dict                    # stream name -> features.<name> + compression (mcnflow.core.streams)
    raw: dict                        # the stage settings as given (recorded in the files)

    @property
    def compression(self):
        # features.compression: the same in every stream's section
        return next(iter(self.streams.values()))["compression"]

    @property
    def decode_workers(self) -> int:
        return int(self.streams[DECODE_WORKERS_STREAM]["decode_workers"])


def media_settings(settings: Mapping[str, Any]) -> MediaSettings:
    """The ``media`` stage settings (see mcnflow.core.plan): normalize, media, and one section per
    media stream it makes (those with ``always`` required, the others when an experiment reads them)."""
    required = ["normalize", "media", *(s.name for s in media_streams() if s.always)]
    missing = [key for key in required if key not in settings]
    if missing:
        raise ConfigError(f"media settings: missing key(s) {', '.join(missing)}")
    media = dict(settings["media"])
    decode = media["decode"]  # filled from the schema default (cpu) when the config omits it
    if decode not in DECODE_CHOICES:
        raise ConfigError(f"config key 'media.decode': {decode!r} is not allowed; allowed values: "
                          + ", ".join(map(repr, DECODE_CHOICES)))
    normalize_section = dict(settings["normalize"])
    keep = bool(normalize_section.get("keep", True))
    streams = {s.name: dict(settings[s.name]) for s in media_streams() if settings.get(s.name)}
    if decode == "cuda":
        if keep:
            raise ConfigError("config key 'media.decode': 'cuda' decodes only the sampled frames on the GPU, but "
                              "normalize.keep is true, which needs every frame decoded on the CPU for the x264 "
                              "encode; set normalize.keep: false or media.decode: cpu")
        refused = [name for name in streams if stream(name).cuda_decode == NO_GPU]
        if refused:
            raise ConfigError(f"config key 'media.decode': 'cuda' cannot serve the {', '.join(refused)} stream "
                              f"({'; '.join(stream(n).description for n in refused)}), which an experiment reads "
                              "(training.video_features); set media.decode: cpu")
    return MediaSettings(normalize=NormalizeSettings.from_mapping(normalize_section), keep=keep, decode=decode,
                         streams=streams, raw=dict(settings))


def build_consumers(settings: MediaSettings, encoders: Mapping[str, Any] | None = None) -> list[Consumer]:
    """The consumers of one media job: one per media stream in the settings, each the stream's
    extractor (mcnflow.core.streams); ``encoders`` replaces a stream's model (tests, benchmarks)."""
    encoders = dict(encoders or {})
    return [consumer_class(s)(s, settings.streams[s.name], settings.normalize, encoder=encoders.get(s.name))
            for s in media_streams() if s.name in settings.streams]


# --- one video, in a decode worker -----------------------------------------------------------------

@dataclass(frozen=True)
class Skipped:
    """A consumer's outcome without features (picklable, unlike an exception with two arguments)."""

    status: str
    message: str


def in_memory_problems(source: MediaInfo, settings: NormalizeSettings, normalized_frames: int | None,
                       audio_samples: int | None) -> tuple[float | None, list[str]]:
    """``keep: false`` has no file to probe: check the counted normalized frames and audio samples
    against the input's duration, as :func:`mcnflow.normalize.verify_output` checks a file's duration."""
    if not normalized_frames:
        return None, ["the decode gave no video frames"]
    durations = [normalized_frames / settings.fps]
    if source.has_audio and audio_samples is not None:
        durations.append(audio_samples / settings.audio_rate)
    duration = max(durations)
    return duration, duration_problems(duration, settings, duration=source.duration,
                                       tolerance=settings.duration_tolerance)


def decode_failure(exc: decode_module.DecodeError, path: Path) -> NormalizeFailure:
    """The ledger failure of a decode whose ffmpeg gave no whole frames (classified by its stderr)."""
    failure = ffmpeg_failure(exc.stderr, path)
    return NormalizeFailure(failure.status, f"{exc} ({failure.message})")


@dataclass(frozen=True)
class Job:
    """One video to decode: its download row and, when an earlier run's normalize row stands
    (:func:`mcnflow.normalize.trusted_row`), that row: the video is decoded for its features only."""

    download: Mapping[str, str]
    normalized: Mapping[str, str] | None = None


class VideoWorker:
    """The decode-worker side of one job: download row in, items for the main process out.

    Only problems of the input become a normalize row here (:class:`NormalizeFailure`); any other
    exception leaves the worker and stops the job."""

    def __init__(self, settings: MediaSettings, consumers: Sequence[Consumer], videos_dir: Path | None):
        self.settings = settings
        self.normalize = settings.normalize
        # the worker halves only: no model is ever built in a worker
        self.consumers = [c.worker_half() for c in consumers]
        self.videos_dir = videos_dir

    def output_of(self, video_id: str) -> Path | None:
        return self.videos_dir / f"{video_id}.mp4" if self.settings.keep and self.videos_dir else None

    def process(self, job: Job) -> Iterator[dict]:
        download = job.download
        video_id = download["video_id"]
        final: dict = {"kind": "video", "video_id": video_id, "prepared": {}, "attrs": {}, "identity": {},
                       "info": None}
        failure = download_failure(download)
        if job.normalized is not None and job.normalized["status"] != NormalizeStatus.OK:
            failure = dict(job.normalized)  # an earlier run's failure of the same input stands
        if failure is not None:
            yield {**final, "normalize": failure}
            return
        output = self.output_of(video_id)
        path = Path(download["path"])
        try:
            info = probe_source(path)
            identity = source_identity(path)
            checksum = file_sha256(path)
            row, prepared = None, {}
            for item in self._decode(video_id, info, output, prepared, job.normalized):
                if item.get("kind") == "row":
                    row = item["row"]
                else:
                    yield item
        except (NormalizeFailure, decode_module.DecodeError) as exc:
            failure = exc if isinstance(exc, NormalizeFailure) else decode_failure(exc, path)
            if output is not None:
                output.unlink(missing_ok=True)  # no kept file beside a row that says there is none
            yield {**final, "normalize": failure_row(video_id, failure.status, failure.message)}
            return
        attrs = {"duration": float(row["duration"] or 0.0), "source": path.name, "source_checksum": checksum,
                 "source_width": self.normalize.width, "source_height": self.normalize.height,
                 "download_width": int(info.width or 0), "download_height": int(info.height or 0)}
        yield {**final, "normalize": row, "prepared": prepared, "attrs": attrs, "identity": identity, "info": info}

    def _decode(self, video_id: str, info: MediaInfo, output: Path | None, prepared: dict,
                normalized: Mapping[str, str] | None) -> Iterator[dict]:
        """Run the one decode; yields chunk items, then ``{"kind": "row"}``; fills ``prepared``."""
        settings = self.normalize
        gpu = self.settings.decode == "cuda"
        taps, whole = [], {}
        for consumer in self.consumers:
            skip = consumer.skip(info)
            if skip is not None:
                prepared[consumer.name] = Skipped(skip.status, skip.message)
            elif gpu and consumer.stream.cuda_decode == GPU:
                prepared[consumer.name] = DECODED_ON_GPU
            else:
                taps.append(consumer.tap())
                whole[consumer.name] = []
        by_name = {c.name: c for c in self.consumers}
        tap_of = {tap.name: tap for tap in taps}
        streamed = Counter()

        def run_decode(encode_to):
            run = decode_module.DecodeRun(info, settings, taps, encode_to=encode_to, video=not gpu)
            for name, chunk in run:
                consumer = by_name[name]
                if consumer.streaming:
                    streamed[name] += len(chunk)
                    yield {"kind": "chunk", "video_id": video_id, "consumer": name,
                           "data": consumer.prepare_chunk(chunk)}
                else:
                    whole[name].append(chunk)
            return run.result

        if output is not None and normalized is None:
            with atomic_path(output) as tmp:
                result = yield from run_decode(tmp)
                self._check_ffmpeg(result, info)
                row = ok_row(video_id, output, verify_file(tmp, info, settings))
        else:
            # GPU decode with no CPU tap (no audio) runs no ffmpeg at all
            result = (yield from run_decode(None)) if taps or not gpu else None
            if result is not None:
                self._check_ffmpeg(result, info)
            row = dict(normalized) if normalized is not None else self._in_memory_row(video_id, info, result)
        # whole-stream consumers, and the first-frame fallback of a video too short for one sample
        for name, tap in tap_of.items():
            consumer = by_name[name]
            if isinstance(tap, decode_module.VideoTap):
                frames = np.concatenate(whole[name]) if whole.get(name) else None
                got = streamed[name] if consumer.streaming else (0 if frames is None else len(frames))
                if got == 0 and tap.first_frame_fallback:
                    first = decode_module.first_frame(info, settings, tap)
                    if consumer.streaming:
                        yield {"kind": "chunk", "video_id": video_id, "consumer": name,
                               "data": consumer.prepare_chunk(first)}
                        continue
                    frames = first
                if not consumer.streaming:
                    prepared[name] = _prepare(consumer, frames)
            else:
                samples = np.concatenate(whole[name]) if whole[name] else np.zeros(0, np.float32)
                prepared[name] = _prepare(consumer, samples)
        yield {"kind": "row", "row": row}

    def _in_memory_row(self, video_id: str, info: MediaInfo, result) -> dict:
        """``keep: false``: the normalize row of the decode (nothing encoded), or verify_failed."""
        settings = self.normalize
        if self.settings.decode == "cuda":
            duration = info.duration  # the video is checked against the GPU decode in the main process
            problems = []
            if result is not None and info.duration:
                audio = result.sizes.get("audio", 0) / settings.audio_rate
                problems = duration_problems(audio, settings, duration=info.duration,
                                             tolerance=settings.duration_tolerance)
        else:
            duration, problems = in_memory_problems(info, settings, result.normalized_frames,
                                                    result.sizes.get("audio"))
        if problems:
            raise NormalizeFailure(NormalizeStatus.VERIFY_FAILED, "; ".join(problems))
        return dict(video_id=video_id, status=NormalizeStatus.OK, message="", has_audio=info.has_audio,
                    duration=duration, width=settings.width, height=settings.height, fps=settings.fps, path="")

    @staticmethod
    def _check_ffmpeg(result, info: MediaInfo) -> None:
        if result.returncode != 0:
            raise ffmpeg_failure(result.stderr, info.path)


def _prepare(consumer: Consumer, data: np.ndarray):
    try:
        return consumer.prepare(data)
    except ConsumerSkip as skip:
        return Skipped(skip.status, skip.message)


class MediaJobs(IterableDataset):
    """An iterable dataset over the shard's jobs; each DataLoader worker takes every n-th video."""

    def __init__(self, worker: VideoWorker, jobs: Sequence[Job]):
        self.worker = worker
        self.jobs = list(jobs)

    def __iter__(self) -> Iterator[dict]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        jobs = self.jobs if info is None else self.jobs[info.id::info.num_workers]
        for job in jobs:
            yield from self.worker.process(job)


def _keep_item(item: dict) -> dict:
    return item


# --- one shard ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outputs:
    """Where one job writes: the normalize ledger and videos, and per consumer an HDF5 file and a ledger."""

    normalize_ledger: Path
    videos_dir: Path | None
    features: Mapping[str, tuple[Path, Path]]   # consumer name -> (h5, ledger)


def _feature_row(video_id: str, status: str, message: str = "", length: int = 0) -> dict:
    return {"video_id": video_id, "status": status, "message": message, "length": length}


def media_shard(download_ledger: str | Path, corpus: str, shard: int | str, outputs: Outputs,
                settings: Mapping[str, Any] | MediaSettings, *, progress: bool = True,
                encoders: Mapping[str, Any] | None = None) -> dict[str, list[dict]]:
    """Run one media job; return the rows of every ledger it wrote (``"normalize"`` and per consumer)."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from mcnflow.features.store import assemble_shard, part_row_trusted, parts_fingerprint, write_part

    settings = settings if isinstance(settings, MediaSettings) else media_settings(settings)
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} must be on PATH for mcnflow media")
    if settings.keep and outputs.videos_dir is None:
        raise ConfigError("normalize.keep is true: mcnflow media needs --videos-dir for the normalized videos")
    consumers = build_consumers(settings, encoders)
    missing = [c.name for c in consumers if c.name not in outputs.features]
    if missing:
        raise ConfigError(f"mcnflow media: no output given for {', '.join(missing)} "
                          f"(--{missing[0]}-output and --{missing[0]}-ledger)")
    downloads = read_download_ledger(download_ledger)
    order = [row["video_id"] for row in downloads]
    videos_dir = Path(outputs.videos_dir) if settings.keep else None
    if videos_dir is not None:
        videos_dir.mkdir(parents=True, exist_ok=True)
    worker = VideoWorker(settings, consumers, videos_dir)
    paths = {row["video_id"]: row.get("path", "") for row in downloads}

    gpu_decoder, gpu_stream = None, None
    if settings.decode == "cuda":
        from mcnflow.media.gpu import GpuFrameSampler

        on_gpu = next(c for c in consumers if c.stream.cuda_decode == GPU)
        gpu_decoder, gpu_stream = GpuFrameSampler.for_settings(settings.normalize, on_gpu.tap()), on_gpu.name

    # --- the runs: one per ledger; a video is settled when every ledger trusts its row
    normalize_fp = parts_fingerprint("normalize", {"normalize": canonical_json(settings.raw["normalize"])}, downloads)
    mp4s = [worker.output_of(vid) for vid in order if videos_dir is not None and is_safe_id(vid)]
    normalize_run = ShardRun(outputs.normalize_ledger, NORMALIZE_COLUMNS, outputs=mp4s, fingerprint=normalize_fp,
                             trust=lambda vid, row: trusted_row(row, worker.output_of(vid), settings.normalize))
    # the models are built in this process only; the decode workers get the consumers' worker halves
    for consumer in consumers:
        consumer.open()
    extra_attrs = {"decoded_from": SOURCE_DESCRIPTION, "normalize": canonical_json(settings.raw["normalize"]),
                   "decode_device": settings.decode}
    attrs = {c.name: {**c.root_attrs(), **extra_attrs} for c in consumers}
    fingerprints = {c.name: parts_fingerprint(c.fingerprint_kind, attrs[c.name], downloads) for c in consumers}
    runs: dict[str, ShardRun] = {}
    for consumer in consumers:
        h5, ledger = outputs.features[consumer.name]
        runs[consumer.name] = ShardRun(
            ledger, FEATURE_COLUMNS, outputs=[h5], fingerprint=fingerprints[consumer.name],
            trust=lambda vid, row, c=consumer: part_row_trusted(runs[c.name], vid, row, c.modality,
                                                                fingerprint=fingerprints[c.name],
                                                                source=paths.get(vid) or None))
    # settled() is asked of every run for every video (it counts each run's kept rows)
    all_runs = [normalize_run, *runs.values()]
    settled = {vid: [run.settled(vid) is not None for run in all_runs] for vid in order}
    kept = {vid: normalize_run.settled(vid) for vid in order}
    # a video whose normalize row stands but whose features do not is decoded again, not encoded again
    jobs = [Job(row, kept[row["video_id"]]) for row in downloads if not all(settled[row["video_id"]])]
    log.info("%s/%s: %d video(s) to decode, %d kept from an earlier run", corpus, shard, len(jobs),
             len(order) - len(jobs))

    computed = Counter()
    pending: dict[str, VideoContext] = {}

    def store(consumer: Consumer):
        def done(video_id: str, features: np.ndarray, video_attrs: dict) -> None:
            context = pending[video_id]
            run = runs[consumer.name]
            write_part(run.part_path(video_id), features, video_attrs,
                       meta={"fingerprint": fingerprints[consumer.name], **context.identity})
            length = int(features.shape[consumer.stream.time_axis])
            run.record(_feature_row(video_id, FeatureStatus.OK, length=length))
            computed[consumer.name] += 1
        return done

    loader = DataLoader(MediaJobs(worker, jobs), batch_size=None, num_workers=settings.decode_workers,
                        collate_fn=_keep_item)
    by_name = {c.name: c for c in consumers}
    started = time.monotonic()
    with tqdm(total=len(jobs) or None, unit="video", desc=f"media {corpus}/{shard}", disable=not progress,
              dynamic_ncols=True) as bar:
        for item in (loader if jobs else ()):
            video_id = item["video_id"]
            if item["kind"] == "chunk":
                by_name[item["consumer"]].accept_chunk(video_id, item["data"])
                continue
            row = item["normalize"]
            prepared = dict(item["prepared"])
            waiting = prepared.get(gpu_stream)  # frames arrive as arrays; only the marker is a str
            if row["status"] == NormalizeStatus.OK and isinstance(waiting, str) and waiting == DECODED_ON_GPU:
                row, frames = _gpu_frames(gpu_decoder, item, settings.normalize)
                if frames is not None:
                    prepared[gpu_stream] = frames
            bar.update(1)
            if row["status"] != NormalizeStatus.OK:
                reason = f"normalize status {row['status']}" + (f": {row['message']}" if row.get("message") else "")
                for consumer in consumers:
                    consumer.discard(video_id)
                    runs[consumer.name].record(_feature_row(video_id, FeatureStatus.NO_MEDIA, reason))
                normalize_run.record(row)
                log.debug("%s: %s: %s", video_id, row["status"], row.get("message", ""))
                continue
            context = VideoContext(video_id, dict(item["attrs"]), item["info"], dict(item["identity"]))
            pending[video_id] = context
            for consumer in consumers:
                outcome = prepared.get(consumer.name)
                if isinstance(outcome, Skipped):
                    consumer.discard(video_id)
                    runs[consumer.name].record(_feature_row(video_id, outcome.status, outcome.message))
                elif consumer.streaming:
                    consumer.end_video(context, store(consumer))
                else:
                    consumer.accept(context, outcome, store(consumer))
            if row != kept[video_id]:  # a kept row is in the journal already
                normalize_run.record(row)
        for consumer in consumers:
            consumer.flush()
    elapsed = time.monotonic() - started

    results: dict[str, list[dict]] = {}
    for consumer in consumers:
        run = runs[consumer.name]
        entries = []
        for video_id in order:
            status = str(run.rows[video_id]["status"])
            entries.append((video_id, status, run.part_path(video_id) if status == FeatureStatus.OK else None))
        h5, _ = outputs.features[consumer.name]
        assemble_shard(h5, consumer.modality, corpus, int(shard), entries, attrs=attrs[consumer.name],
                       compression=settings.compression)
        results[consumer.name] = run.finish(order)  # a ledger never describes a missing file
    results["normalize"] = normalize_run.finish(order)
    counts = Counter(row["status"] for row in results["normalize"])
    log.info("%s/%s: %d video(s) in %.1f s; normalize: %s; computed %s", corpus, shard, len(order), elapsed,
             ", ".join(f"{s}={counts[s]}" for s in NORMALIZE_STATUSES if counts[s]) or "none",
             ", ".join(f"{c.name} {computed[c.name]}" for c in consumers))
    return results


# text of the exceptions torch and the CUDA libraries raise as RuntimeError when the device fails
DEVICE_ERROR_MARKERS = ("cuda", "cudnn", "cublas", "out of memory", "device-side assert", "nvdec", "cuvid")


def is_device_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the GPU failing (not the input): a CUDA / cuDNN error or out of memory."""
    import torch

    device_types = tuple(t for t in (torch.cuda.OutOfMemoryError, getattr(torch, "AcceleratorError", None))
                         if isinstance(t, type))
    if isinstance(exc, device_types):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc).lower() for marker in DEVICE_ERROR_MARKERS)


def _gpu_frames(decoder, item: dict, settings: NormalizeSettings):
    """``media.decode: cuda``: the sampled frames of one video, decoded and normalized on the GPU;
    (normalize row, frames or None). torchcodec's RuntimeError about the file is the video's
    ``corrupt`` row, as an ffmpeg decode failure is on the CPU; a device error or any other
    exception stops the job."""
    row = dict(item["normalize"])
    info: MediaInfo = item["info"]
    try:
        frames = decoder.sample(info)
    except RuntimeError as exc:
        if is_device_error(exc):
            raise
        return failure_row(row["video_id"], NormalizeStatus.CORRUPT, f"GPU decode: {type(exc).__name__}: {exc}"), None
    problems = decoder.count_problems(info, int(frames.shape[0]))
    if problems:
        return failure_row(row["video_id"], NormalizeStatus.VERIFY_FAILED, "; ".join(problems)), None
    return row, frames


# --- CLI -------------------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--download-ledger", required=True, type=Path,
                        help="the shard's download ledger (results/download/{corpus}/shard-NNNNN.tsv)")
    parser.add_argument("--corpus", required=True, help="corpus name (recorded in the feature files)")
    parser.add_argument("--shard", required=True, help="shard id, e.g. 00003")
    parser.add_argument("--normalize-ledger", required=True, type=Path,
                        help="normalize ledger to write (results/normalize/{corpus}/shard-NNNNN.tsv)")
    parser.add_argument("--videos-dir", type=Path, default=None,
                        help="directory for the normalized <video_id>.mp4 (needed when normalize.keep is true; "
                             "not a Snakemake output: the files survive a failed job, the ledger decides trust)")
    for s in media_streams():
        when = "" if s.always else " (when an experiment reads it)"
        parser.add_argument(f"--{s.name}-output", type=Path, default=None, metavar="H5",
                            help=f"the shard's {s.name} HDF5 file: {s.description}{when}")
        parser.add_argument(f"--{s.name}-ledger", type=Path, default=None, metavar="TSV",
                            help=f"the shard's {s.name} feature ledger")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_settings_arguments(parser)


def main(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"\d+", args.shard):
        raise ConfigError(f"--shard {args.shard!r}: expected digits such as 00003")
    settings = media_settings(settings_from_args(args, STAGE))
    if not args.download_ledger.is_file():
        log.error("download ledger not found: %s", args.download_ledger)
        return 1
    features = {}
    for s in media_streams():
        h5, ledger = getattr(args, f"{s.name}_output"), getattr(args, f"{s.name}_ledger")
        if (h5 is None) != (ledger is None):
            raise ConfigError(f"--{s.name}-output and --{s.name}-ledger go together")
        if h5 is not None:
            if s.name not in settings.streams:
                raise ConfigError(f"--{s.name}-output given but the settings have no {s.name} section "
                                  "(no experiment reads that stream)")
            features[s.name] = (h5, ledger)
    outputs = Outputs(args.normalize_ledger, args.videos_dir, features)
    # any exception (a device error, a bug) ends the job with its traceback and a non-zero exit
    media_shard(args.download_ledger, args.corpus, args.shard, outputs, settings, progress=not args.quiet)
    return 0
