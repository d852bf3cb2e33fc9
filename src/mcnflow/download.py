"""``mcnflow download``: fetch one shard of videos with yt-dlp (or take local files); one ledger row each.

    mcnflow download --manifest results/manifest/howto100m.tsv --shard 00003 --id-kind youtube \\
        --ledger results/download/howto100m/shard-00003.tsv \\
        --videos-dir results/download/howto100m/videos --config config.yaml

Each video of the shard ends as one ledger row (ledger.DOWNLOAD_COLUMNS) whose status says what
happened (ledger.DOWNLOAD_STATUSES; ytdlp_errors.py maps yt-dlp's messages onto them):

- a URL source is fetched with ONE ``YoutubeDL.extract_info(url, download=True)`` (video + audio,
  merged, plus English captions), written under ``videos-dir/.tmp-<id>/`` and renamed to
  ``videos-dir/<id>.mp4`` (captions ``<id>.<lang>.vtt``) only when complete;
- a local source (a path, not http/https) is not copied: the row points at it;
- an id that is not a valid id gets an ``error`` row; it never reaches a path or a command.

Transient failures (HTTP 5xx/403, timeouts, resets) are retried in the job with exponential
back-off. Rate-limit answers are about our IP, not the video: ``rate_limit_burst`` of them in a
row pause the whole shard for ``cooldown`` seconds (and retry those videos); after
``max_cooldowns`` pauses the job stops contacting the server, gives every remaining video a
``rate_limited`` row and exits 0. A broken extractor (nsig / "Unable to extract" ...) is our
problem: the job writes that video's journal row, logs a loud error and exits 3 without the final
ledger, instead of turning the whole shard into failures.

How a rerun works
-----------------
While it works the job appends every outcome to ``<ledger>.journal``; the final ledger is written
atomically at the end (then the journal is removed). A job that was killed, or that stopped with
exit 3, leaves the journal: the next run reads it AND any existing final ledger and only does
what is left. It skips videos that are ``ok`` (the file still exists with the recorded size),
permanently gone (unavailable / private / removed / geo_blocked / login_required) or ``skipped``
(longer than ``max_duration``), and plain ``error`` rows; it retries ``rate_limited`` and
``transient`` rows, ``error`` rows caused by a broken extractor, and videos without a row. A
complete ``<id>.mp4`` found without a row (the ledger was lost) is taken as is: only complete
files ever get that name. Leftovers of a killed run (``.tmp-<id>*``, ``*.part``) are deleted at
the start, never resumed.

Once the final ledger exists Snakemake considers the shard done (even with ``rate_limited``
rows). To retry the retryable rows run ``snakemake --forcerun download_shard`` (or rerun this
command by hand on the shard). Snakemake deletes a job's outputs before running it unless the
output is flagged ``update()``, so the rule declares its ledger ``update(...)``: the forced rerun
still sees it. (Without the flag finished files are still found by name and kept, but permanent
failures would be asked about once more.)
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import urlparse

import yt_dlp
from tqdm import tqdm
from yt_dlp.utils import YoutubeDLError

from mcnflow.core.atomic import TMP_PREFIX, commit
from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args
from mcnflow.core.ids import ID_KINDS, InvalidVideoId, validate_video_id
from mcnflow.core.ledger import (DOWNLOAD_COLUMNS, DOWNLOAD_OK, DOWNLOAD_PERMANENT, DOWNLOAD_STATUSES, Journal,
                     journal_path, ledger_by_id, read_ledger)
from mcnflow.core.media_probe import MediaProbeError, probe
from mcnflow.ytdlp_errors import TRANSIENT, Classification, classify, classify_message

log = logging.getLogger(__name__)
_ytdlp_log = logging.getLogger(__name__ + ".yt_dlp")

EXIT_SYSTEMIC = 3   # the extractor (or disk, cookies) is broken: fix it, then rerun
EXIT_BAD_INPUT = 2  # the manifest cannot be read

# The keys of config.yaml's `download:` section this stage reads (all of them are required).
SETTING_KEYS = (
    "format", "format_sort", "max_height", "merge_output_format", "captions", "caption_languages",
    "cookies_file", "proxy", "sleep_requests", "sleep_interval", "max_sleep_interval", "socket_timeout",
    "attempts", "backoff_initial", "backoff_max", "max_duration", "rate_limit_burst", "cooldown",
    "max_cooldowns",
)
NOT_ATTEMPTED = "not attempted: shard paused after repeated rate limiting"
SUBTITLE_FAILURE = "unable to download video subtitles"
MANIFEST_COLUMNS = ("video_id", "shard", "source")


class ManifestError(ValueError):
    """The manifest is missing, lacks a column or has a bad shard number; the message says which."""


@dataclass(frozen=True)
class Video:
    video_id: str  # as written in the manifest (validated before use)
    source: str    # URL or local path


# --- input --------------------------------------------------------------------------------------

def shard_number(text: str) -> int:
    """``--shard``: "00003" and "3" name the same shard."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard must be a number such as 00003, got {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"shard must not be negative, got {text!r}")
    return number


def ledger_key(video_id: str) -> str:
    """The id as a ledger cell holds it (a TSV cell cannot hold tabs or newlines)."""
    return video_id.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def read_shard(manifest: str | Path, shard: int) -> list[Video]:
    """The shard's rows of the manifest in manifest order (an id listed twice is taken once)."""
    try:
        rows = read_ledger(manifest)
    except FileNotFoundError:
        raise ManifestError(f"manifest {manifest} does not exist") from None
    if rows and not set(MANIFEST_COLUMNS) <= set(rows[0]):
        raise ManifestError(f"manifest {manifest} lacks column(s) "
                            f"{', '.join(sorted(set(MANIFEST_COLUMNS) - set(rows[0])))}")
    videos: dict[str, Video] = {}
    for line, row in enumerate(rows, start=2):
        try:
            row_shard = int(row["shard"])
        except (TypeError, ValueError):
            raise ManifestError(f"manifest {manifest} line {line}: shard {row['shard']!r} is not a number") from None
        if row_shard != shard:
            continue
        video_id = row["video_id"] or ""
        if ledger_key(video_id) in videos:
            log.warning("manifest %s line %d: %r is listed again; the first row is used", manifest, line, video_id)
            continue
        videos[ledger_key(video_id)] = Video(video_id, (row["source"] or "").strip())
    return list(videos.values())


def check_settings(settings: Mapping) -> dict:
    missing = [key for key in SETTING_KEYS if key not in settings]
    if missing:
        raise ConfigError(f"download settings lack key(s) {', '.join(missing)} (see config.yaml's `download:`)")
    if settings["attempts"] < 1:
        raise ConfigError(f"config key 'download.attempts': {settings['attempts']!r} violates minimum 1")
    if settings["max_sleep_interval"] < settings["sleep_interval"]:
        raise ConfigError(f"config key 'download.max_sleep_interval': {settings['max_sleep_interval']!r} "
                          f"is below download.sleep_interval {settings['sleep_interval']!r}")
    return dict(settings)


def is_url(source: str) -> bool:
    return urlparse(source).scheme.lower() in ("http", "https")


# --- rows ---------------------------------------------------------------------------------------

def make_row(video_id: str, status: str, message: str = "", *, size: int | None = None,
             duration: float | None = None, path: str | Path | None = None,
             captions_path: str | Path | None = None, attempts: int = 0) -> dict:
    assert status in DOWNLOAD_STATUSES, status
    return {"video_id": ledger_key(video_id), "status": status, "message": " ".join(message.split()),
            "bytes": size, "duration": duration, "path": None if path is None else str(path),
            "captions_path": None if captions_path is None else str(captions_path), "attempts": attempts}


def probe_duration(path: str | Path) -> float | None:
    """Seconds of media in ``path`` according to ffprobe (None if it cannot tell)."""
    try:
        return probe(path).duration
    except MediaProbeError as exc:
        log.warning("ffprobe cannot read %s: %s", path, exc.reason)
        return None


def local_row(video: Video) -> dict:
    """A local source is used where it is: ok if it is a non-empty file."""
    path = Path(video.source)
    if not path.is_file():
        return make_row(video.video_id, "unavailable", f"file not found: {video.source}")
    size = path.stat().st_size
    if size == 0:
        return make_row(video.video_id, "unavailable", f"empty file: {video.source}")
    return make_row(video.video_id, DOWNLOAD_OK, size=size, duration=probe_duration(path), path=video.source)


def file_intact(row: Mapping[str, str]) -> bool:
    """An ``ok`` row still describes the file on disk (present, with the recorded size)."""
    try:
        return os.path.getsize(row["path"]) == int(row["bytes"])
    except (OSError, ValueError, TypeError, KeyError):
        return False


def is_settled(row: Mapping[str, str]) -> bool:
    """A rerun keeps this row instead of trying the video again."""
    status = row.get("status")
    if status == DOWNLOAD_OK:
        return file_intact(row)
    if status in DOWNLOAD_PERMANENT or status == "skipped":
        return True
    if status == "error":
        # An error because the extractor was broken says nothing about the video: try it again.
        return not classify_message(row.get("message", "")).systemic
    return False  # rate_limited, transient, or a status this version does not know


def prior_rows(ledger: Path, journal: Journal) -> dict[str, dict[str, str]]:
    """What earlier runs found: the final ledger, updated by the (newer) journal."""
    rows = ledger_by_id(ledger) if ledger.exists() else {}
    rows.update(journal.read())
    return rows


def remove_leftovers(videos_dir: Path, video_ids: Iterable[str]) -> int:
    """Delete what killed runs left for these videos: ``.tmp-<id>*`` (files or work dirs) and ``*.part``.

    Only this shard's ids: other shards' jobs may be writing into the same directory right now.
    """
    ids = set(video_ids)
    removed = 0
    if not videos_dir.is_dir():
        return 0
    with os.scandir(videos_dir) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(TMP_PREFIX):
                owner = name[len(TMP_PREFIX):].split(".", 1)[0]
            elif name.endswith(".part"):
                owner = name.split(".", 1)[0]
            else:
                continue
            if owner not in ids:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)
            removed += 1
    return removed


# --- yt-dlp -------------------------------------------------------------------------------------

class YtDlpLog:
    """yt-dlp's ``logger``: its output goes to logging; warnings are kept to help classify an error."""

    def __init__(self, video_id: str):
        self.video_id = video_id
        self.warnings: list[str] = []

    def debug(self, message: str) -> None:  # yt-dlp sends its screen (info) lines here too
        _ytdlp_log.debug("%s: %s", self.video_id, message)

    def info(self, message: str) -> None:
        _ytdlp_log.debug("%s: %s", self.video_id, message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        _ytdlp_log.warning("%s: %s", self.video_id, message)

    def error(self, message: str) -> None:
        # The same text arrives as the DownloadError; the classified outcome is logged instead.
        _ytdlp_log.debug("%s: %s", self.video_id, message)


class DurationFilter:
    """yt-dlp ``match_filter``: reject videos longer than ``max_duration`` and remember why."""

    def __init__(self, max_duration: float | None):
        self.max_duration = max_duration
        self.rejected: str | None = None

    def __call__(self, info: Mapping, *, incomplete=False) -> str | None:
        duration = info.get("duration")
        if self.max_duration is None or duration is None or duration <= self.max_duration:
            return None
        self.rejected = f"duration {duration:g} s is over max_duration {self.max_duration:g} s"
        return self.rejected


def ytdlp_params(settings: Mapping, workdir: Path, logger: YtDlpLog, match_filter: DurationFilter,
                 captions: bool) -> dict:
    """``YoutubeDL`` parameters for one video, written under ``workdir``."""
    height = str(settings["max_height"])
    params = {
        "format": settings["format"].replace("{max_height}", height),
        "format_sort": [key.replace("{max_height}", height) for key in settings["format_sort"]],
        "merge_output_format": settings["merge_output_format"],
        "outtmpl": {"default": str(workdir / "video.%(ext)s")},
        "noplaylist": True,
        "ignoreerrors": False,       # every failure raises, so it can be classified
        "quiet": True,
        "noprogress": True,
        "logger": logger,
        "socket_timeout": settings["socket_timeout"],
        # One retry loop, ours: it backs off as configured and the ledger's attempts counts its tries.
        "retries": 0,
        "fragment_retries": 0,
        "extractor_retries": 0,
        "continuedl": False,         # never resume a partial file
        "sleep_interval_requests": settings["sleep_requests"],
        "sleep_interval": settings["sleep_interval"],
        "max_sleep_interval": settings["max_sleep_interval"],
        "match_filter": match_filter,
    }
    if captions:
        params.update({
            "writesubtitles": True,
            "writeautomaticsub": True,
            "subtitleslangs": list(settings["caption_languages"]),
            "subtitlesformat": "vtt",  # what the corpus readers parse (caption_format: vtt)
        })
    if settings["cookies_file"]:
        params["cookiefile"] = settings["cookies_file"]
    if settings["proxy"]:
        params["proxy"] = settings["proxy"]
    return params


@dataclass
class Attempt:
    """One try: either a finished row (ok / skipped) or a failure with its classification."""
    row: dict | None = None
    verdict: Classification | None = None
    message: str = ""


# --- the shard ----------------------------------------------------------------------------------

class ShardDownloader:
    def __init__(self, settings: Mapping, videos_dir: Path, ledger: Path, id_kind: str, shard_name: str):
        self.settings = settings
        self.videos_dir = videos_dir
        self.ledger = ledger
        self.id_kind = id_kind
        self.shard_name = shard_name
        self.journal = Journal(journal_path(ledger), DOWNLOAD_COLUMNS)
        self.progress: tqdm | None = None
        self._recorded: set[str] = set()

    # bookkeeping
    def record(self, row: dict) -> None:
        self.journal.append(row)
        level = logging.INFO if row["status"] in (DOWNLOAD_OK, *DOWNLOAD_PERMANENT, "skipped") else logging.WARNING
        detail = row["message"] or (f"{row['bytes']} bytes, {row['duration'] or '?'} s" if row["status"] == DOWNLOAD_OK else "")
        log.log(level, "%s: %s%s", row["video_id"], row["status"], f" ({detail})" if detail else "")
        if row["video_id"] not in self._recorded:
            self._recorded.add(row["video_id"])
            if self.progress is not None:
                self.progress.update(1)

    # one video from a URL
    def fetch(self, video: Video) -> tuple[dict, Classification | None]:
        """Download ``video`` with up to ``attempts`` tries; return its row and the failure's classification."""
        attempts = self.settings["attempts"]
        attempt = 0
        while True:
            attempt += 1
            result = self.try_once(video, captions=self.settings["captions"])
            if result.row is None and SUBTITLE_FAILURE in result.message.lower() and result.verdict.status not in (
                    "rate_limited", "transient") and not result.verdict.systemic:
                # Captions are a bonus: a video whose caption track fails for good is still worth having.
                note = f"captions failed: {result.message}"
                result = self.try_once(video, captions=False)
                if result.row is not None:
                    result.row["message"] = " ".join(note.split())
            if result.row is not None:
                result.row["attempts"] = attempt
                return result.row, None
            verdict = result.verdict
            if verdict is not TRANSIENT or attempt >= attempts:
                return make_row(video.video_id, verdict.status, result.message, attempts=attempt), verdict
            delay = min(self.settings["backoff_initial"] * 2 ** (attempt - 1), self.settings["backoff_max"])
            log.info("%s: transient failure (try %d of %d), next try in %.1f s: %s",
                     video.video_id, attempt, attempts, delay, result.message)
            time.sleep(delay)

    def try_once(self, video: Video, captions: bool) -> Attempt:
        workdir = self.videos_dir / f"{TMP_PREFIX}{video.video_id}"
        shutil.rmtree(workdir, ignore_errors=True)  # never resume what an earlier try left
        workdir.mkdir(parents=True)
        logger = YtDlpLog(video.video_id)
        duration_filter = DurationFilter(self.settings["max_duration"])
        params = ytdlp_params(self.settings, workdir, logger, duration_filter, captions)
        try:
            try:
                with yt_dlp.YoutubeDL(params) as ydl:
                    info = ydl.extract_info(video.source, download=True)
            except YoutubeDLError as exc:  # DownloadError, and the few errors yt-dlp raises as they are
                message = str(exc).removeprefix("ERROR: ").strip() or type(exc).__name__
                return Attempt(verdict=classify(message, exc, logger.warnings), message=message)
            if duration_filter.rejected:
                return Attempt(row=make_row(video.video_id, "skipped", duration_filter.rejected))
            return self.keep_files(video, info or {}, workdir, logger)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def keep_files(self, video: Video, info: Mapping, workdir: Path, logger: YtDlpLog) -> Attempt:
        """Move the finished files out of ``workdir`` to their final names; captions first, video last."""
        downloads = info.get("requested_downloads") or []
        filepath = downloads[-1].get("filepath") if downloads else None
        if not filepath or not Path(filepath).is_file():
            message = "yt-dlp finished without writing a video file"
            return Attempt(verdict=classify(message, None, logger.warnings), message=message)
        video_file = Path(filepath)
        size = video_file.stat().st_size
        if size == 0:
            message = "The downloaded file is empty"
            return Attempt(verdict=classify(message), message=message)
        captions_path = None
        subtitles = info.get("requested_subtitles") or {}
        preference = {lang: i for i, lang in enumerate(self.settings["caption_languages"])}
        for lang in sorted(subtitles, key=lambda lang: preference.get(lang, len(preference))):
            sub_file = subtitles[lang].get("filepath")
            if not sub_file or not Path(sub_file).is_file():
                continue
            final_sub = self.videos_dir / f"{video.video_id}.{lang}{Path(sub_file).suffix}"
            commit(sub_file, final_sub)
            captions_path = captions_path or final_sub
        final = self.videos_dir / f"{video.video_id}{video_file.suffix}"
        commit(video_file, final)
        duration = probe_duration(final) or info.get("duration")
        return Attempt(row=make_row(video.video_id, DOWNLOAD_OK, size=size, duration=duration, path=final,
                                    captions_path=captions_path))

    def found_complete(self, video: Video) -> dict | None:
        """A complete ``<id>.<ext>`` without a ledger row (ledger lost): take it instead of downloading."""
        final = self.videos_dir / f"{video.video_id}.{self.settings['merge_output_format']}"
        if not final.is_file() or final.stat().st_size == 0:
            return None
        captions = [self.videos_dir / f"{video.video_id}.{lang}.vtt" for lang in self.settings["caption_languages"]]
        captions_path = next((c for c in captions if c.is_file()), None)
        return make_row(video.video_id, DOWNLOAD_OK, "complete file from an earlier run", size=final.stat().st_size,
                        duration=probe_duration(final), path=final, captions_path=captions_path)

    # the whole shard
    def run(self, videos: list[Video]) -> int:
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        self.progress = tqdm(total=len(videos), desc=f"download shard {self.shard_name}", unit="video",
                             file=sys.stderr)
        try:
            to_fetch = self.settle_known(videos)
            code = self.fetch_all(to_fetch)
        finally:
            self.progress.close()
        if code != 0:
            return code
        rows = self.journal.finish(self.ledger, [ledger_key(v.video_id) for v in videos])
        counts = collections.Counter(row["status"] for row in rows)
        log.info("shard %s: %d video(s): %s", self.shard_name, len(rows),
                 ", ".join(f"{status} {counts[status]}" for status in DOWNLOAD_STATUSES if counts[status]) or "none")
        return 0

    def settle_known(self, videos: list[Video]) -> list[Video]:
        """Record every outcome known without asking the server; return the videos left to download."""
        valid: list[Video] = []
        for video in videos:
            try:
                validate_video_id(video.video_id, self.id_kind)
            except InvalidVideoId as exc:
                self.record(make_row(video.video_id, "error", str(exc)))
                continue
            valid.append(video)
        removed = remove_leftovers(self.videos_dir, [v.video_id for v in valid])
        if removed:
            log.info("removed %d leftover partial file(s) of an earlier run", removed)

        earlier = prior_rows(self.ledger, self.journal)
        journaled = self.journal.read()
        to_fetch: list[Video] = []
        settled = 0
        for video in valid:
            row = earlier.get(video.video_id)
            if not video.source:
                self.record(make_row(video.video_id, "error", "the manifest gives no source"))
            elif not is_url(video.source):
                self.record(local_row(video))
            elif row is not None and is_settled(row):
                if journaled.get(video.video_id) != row:
                    self.journal.append(row)  # carried over from the final ledger
                settled += 1
                self.progress.update(1)
            elif (row is None or row["status"] != DOWNLOAD_OK) and (found := self.found_complete(video)):
                self.record(found)
            else:
                to_fetch.append(video)
        if settled:
            log.info("%d video(s) already settled by an earlier run", settled)
        return to_fetch

    def fetch_all(self, videos: list[Video]) -> int:
        """Download ``videos`` in order, pausing the shard when the server keeps rate limiting."""
        pending = collections.deque(videos)
        streak: list[Video] = []  # videos rate limited in a row
        cooldowns = 0
        burst, cooldown, max_cooldowns = (self.settings[k] for k in ("rate_limit_burst", "cooldown", "max_cooldowns"))
        while pending:
            video = pending.popleft()
            row, verdict = self.fetch(video)
            self.record(row)
            if verdict is not None and verdict.systemic:
                log.error("STOPPING shard %s: %s failed in a way that breaks every video (%s). Fix the cause "
                          "(update yt-dlp, install a JS runtime, free disk space, check cookies), then rerun; "
                          "finished videos are kept.", self.shard_name, video.video_id, row["message"])
                return EXIT_SYSTEMIC
            if row["status"] != "rate_limited":
                streak.clear()
                continue
            streak.append(video)
            if len(streak) < burst:
                continue
            if cooldowns >= max_cooldowns:
                log.error("shard %s: still rate limited after %d cooldown(s); not contacting the server again. "
                          "%d video(s) stay rate_limited for a later run.", self.shard_name, cooldowns, len(pending))
                for rest in pending:
                    self.record(make_row(rest.video_id, "rate_limited", NOT_ATTEMPTED))
                return 0
            cooldowns += 1
            log.warning("shard %s: %d rate-limit answers in a row; pausing %g s (cooldown %d of %d), then "
                        "retrying them", self.shard_name, len(streak), cooldown, cooldowns, max_cooldowns)
            time.sleep(cooldown)
            pending.extendleft(reversed(streak))
            streak = []
        return 0


# --- CLI ----------------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", required=True, help="manifest TSV (video_id, shard, source)")
    parser.add_argument("--shard", required=True, type=shard_number, help="shard number, e.g. 00003")
    parser.add_argument("--id-kind", required=True, choices=sorted(ID_KINDS), help="how video ids are validated")
    parser.add_argument("--ledger", required=True, help="the shard's download ledger (TSV) to write")
    parser.add_argument("--videos-dir", required=True, help="where downloaded videos go (shared by all shards)")
    add_settings_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings = check_settings(settings_from_args(args, "download"))
    try:
        videos = read_shard(args.manifest, args.shard)
    except ManifestError as exc:
        log.error("%s", exc)
        return EXIT_BAD_INPUT
    shard_name = f"{args.shard:05d}"
    downloader = ShardDownloader(settings, Path(args.videos_dir), Path(args.ledger), args.id_kind, shard_name)
    log.info("shard %s: %d video(s) from %s", shard_name, len(videos), args.manifest)
    return downloader.run(videos)
