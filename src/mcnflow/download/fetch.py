"""Fetch one video: ONE ``YoutubeDL.extract_info(url, download=True)`` (or take a local file).

A URL source is fetched with video + audio merged, plus English captions, written under
``videos-dir/.tmp-<id>/`` and renamed to ``videos-dir/<id>.mp4`` (captions ``<id>.<lang>.vtt``)
only when complete. A local source (a path, not http/https) is not copied: the row points at it.

:meth:`Fetcher.fetch` is one video "as well as it can be done now": a caption track that fails for
good is dropped (the video is still worth having), and the embed-disabled answer of YouTube's
web_embedded player (a yt-dlp bug, classify.py) is asked once more with
``download.embed_fallback_clients``. Retrying over time (back-off, cool-downs) is the shard
policy's job (policy.py). :meth:`Fetcher.check` only extracts, for canary videos (canary.py).

What reaches yt-dlp from config.yaml's ``download:`` section: format and sorting, captions,
cookies, proxy, the sleeps of yt-dlp's ``-t sleep`` preset, player clients and other
``extractor_args``, the JavaScript runtime (``js_runtimes``, ``remote_components``) and the
PO-token provider plugin's address. The plugin (``bgutil-ytdlp-pot-provider``) is optional: yt-dlp
loads it by itself when it is installed; :func:`po_token_plugin` only reports whether it is.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlparse

import yt_dlp
from yt_dlp.utils import YoutubeDLError

from mcnflow.core.atomic import TMP_PREFIX, commit
from mcnflow.core.media_probe import MediaProbeError, probe
from mcnflow.core.status import DownloadStatus as S, Verdict
from mcnflow.download.classify import Classification, Retry, classify

log = logging.getLogger(__name__)
_ytdlp_log = logging.getLogger("mcnflow.download.yt_dlp")

SUBTITLE_FAILURE = "unable to download video subtitles"
CAPTION_GONE = re.compile(r"http error (403|404|410)")
YTDLP_VERSION = yt_dlp.version.__version__  # stored with every answer: `download --retry` picks older ones
PO_TOKEN_PLUGIN = "bgutil-ytdlp-pot-provider"  # PyPI name; optional, never a dependency
PO_TOKEN_HTTP_ARGS = "youtubepot-bgutilhttp"   # its extractor-args namespace (base_url)


@dataclass(frozen=True)
class Video:
    video_id: str  # as written in the manifest (validated before use)
    source: str    # URL or local path


def ledger_key(video_id: str) -> str:
    """The id as a ledger cell holds it (a TSV cell cannot hold tabs or newlines)."""
    return video_id.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def is_url(source: str) -> bool:
    return urlparse(source).scheme.lower() in ("http", "https")


# --- rows ---------------------------------------------------------------------------------------

def make_row(video_id: str, status: str, message: str = "", *, size: int | None = None,
             duration: float | None = None, path: str | Path | None = None,
             captions_path: str | Path | None = None, attempts: int = 0, verdict: str = "") -> dict:
    """A ledger row; the policy adds the cross-run history (attempts, first/last attempt, yt-dlp version)."""
    status = S(status)  # a status outside the vocabulary is a bug: ValueError here, not a bad ledger
    verdict = Verdict(verdict).value if verdict else ""
    return {"video_id": ledger_key(video_id), "status": status.value, "message": " ".join(message.split()),
            "bytes": size, "duration": duration, "path": None if path is None else str(path),
            "captions_path": None if captions_path is None else str(captions_path), "attempts": attempts,
            "verdict": verdict, "first_attempt": None, "last_attempt": None, "ytdlp_version": None}


def version_key(version: str | None) -> tuple[int, ...]:
    """yt-dlp's date versions ("2026.10.26", nightly "2026.10.26.232045") as comparable numbers; none is oldest."""
    return tuple(int(part) for part in (version or "").split(".") if part.isdigit())


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
        return make_row(video.video_id, S.UNAVAILABLE, f"file not found: {video.source}", verdict=Verdict.VIDEO)
    size = path.stat().st_size
    if size == 0:
        return make_row(video.video_id, S.UNAVAILABLE, f"empty file: {video.source}", verdict=Verdict.VIDEO)
    return make_row(video.video_id, S.OK, size=size, duration=probe_duration(path), path=video.source)


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


def po_token_plugin() -> str | None:
    """The installed version of the PO-token provider plugin, or None (it is optional)."""
    try:
        return metadata.version(PO_TOKEN_PLUGIN)
    except metadata.PackageNotFoundError:
        return None


def extractor_args(settings: Mapping, player_clients: Sequence[str] | None = None) -> dict:
    """yt-dlp ``extractor_args`` ({extractor: {argument: [values]}}) from the settings (a new dict)."""
    args = {str(ie): {str(name): [str(v) for v in values] for name, values in ie_args.items()}
            for ie, ie_args in settings["extractor_args"].items()}
    clients = player_clients or settings["player_clients"]
    if clients:
        args.setdefault("youtube", {})["player_client"] = [str(c) for c in clients]
    if settings["po_token_provider"] == "never":
        args.setdefault("youtube", {})["fetch_pot"] = ["never"]
    elif settings["po_token_base_url"]:
        args.setdefault(PO_TOKEN_HTTP_ARGS, {})["base_url"] = [str(settings["po_token_base_url"])]
    return args


def ytdlp_params(settings: Mapping, workdir: Path, logger: YtDlpLog, match_filter: DurationFilter | None,
                 captions: bool, player_clients: Sequence[str] | None = None) -> dict:
    """``YoutubeDL`` parameters for one video, written under ``workdir`` (a new dict: settings stay as they are)."""
    height = str(settings["max_height"])
    runtime_path = settings["js_runtime_path"]
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
        # yt-dlp's own retries (its defaults or more) ride out a dropped connection or a flaky
        # fragment inside one try; ours (policy.py) back off between whole tries.
        "retries": settings["http_retries"],
        "fragment_retries": settings["fragment_retries"],
        "extractor_retries": settings["extractor_retries"],
        "continuedl": False,         # never resume a partial file
        "sleep_interval_requests": settings["sleep_requests"],
        "sleep_interval": settings["sleep_interval"],
        "max_sleep_interval": settings["max_sleep_interval"],
        "sleep_interval_subtitles": settings["sleep_subtitles"],
        "extractor_args": extractor_args(settings, player_clients),
        "js_runtimes": {settings["js_runtime"]: {"path": runtime_path} if runtime_path else {}},
        "remote_components": [str(c) for c in settings["remote_components"]],
    }
    if match_filter is not None:
        params["match_filter"] = match_filter
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
    if settings["source_address"]:
        params["source_address"] = settings["source_address"]
    return params


@dataclass
class Attempt:
    """One try: either a finished row (ok / skipped) or a failure with its classification."""
    row: dict | None = None
    verdict: Classification | None = None
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.row is None


def _failure(exc: YoutubeDLError, logger: YtDlpLog) -> Attempt:
    message = str(exc).removeprefix("ERROR: ").strip() or type(exc).__name__
    return Attempt(verdict=classify(message, exc, logger.warnings), message=message)


def caption_track_failed(result: Attempt) -> bool:
    """The caption track, not the video, failed for good: a 403 (web's subtitles want a PO token), 404 or
    410 on the track, or any answer that is neither a rate limit, a network hiccup nor a systemic stop."""
    text = result.message.lower()
    if SUBTITLE_FAILURE not in text:
        return False
    return bool(CAPTION_GONE.search(text)) or result.verdict.retry not in (Retry.COOLDOWN, Retry.BACKOFF, Retry.STOP)


class Fetcher:
    """Fetch videos of one shard into ``videos_dir`` with the ``download:`` settings."""

    def __init__(self, settings: Mapping, videos_dir: Path):
        self.settings = settings
        self.videos_dir = videos_dir

    def fetch(self, video: Video) -> Attempt:
        """One try at ``video``, with the fallbacks that belong to one try (captions, player clients, format)."""
        captions = bool(self.settings["captions"])
        result = self.attempt(video, captions=captions)
        if result.failed and caption_track_failed(result):
            # Captions are a bonus: a video whose caption track fails for good is still worth having.
            note = f"captions failed: {result.message}"
            result = self.attempt(video, captions=False)
            if result.row is not None:
                result.row["message"] = " ".join(note.split())
        clients = list(self.settings["embed_fallback_clients"])
        if result.failed and clients and result.verdict.retry is Retry.OTHER_CLIENT:
            log.info("%s: the embedded player refused it (yt-dlp #17497, Error 153); trying player clients %s",
                     video.video_id, ",".join(clients))
            result = self.again(video, result, f"player clients {','.join(clients)}", captions=captions,
                                player_clients=clients)
        fallback = self.settings["fallback_format"]
        if result.failed and fallback and result.verdict.retry is Retry.FALLBACK_FORMAT:
            log.info("%s: post-processing failed (%s); trying format %s", video.video_id, result.message, fallback)
            result = self.again(video, result, f"format {fallback}", captions=captions, format_=fallback)
        return result

    def again(self, video: Video, first: Attempt, what: str, **options) -> Attempt:
        """One more try with other options; the first answer stays in the row's message."""
        result = self.attempt(video, **options)
        if result.row is not None:
            result.row["message"] = " ".join(f"with {what}; first answer: {first.message}".split())
        else:
            result.message = f"{result.message} (also with {what}; first answer: {first.message})"
        return result

    def attempt(self, video: Video, captions: bool, player_clients: Sequence[str] | None = None,
                format_: str | None = None) -> Attempt:
        """ONE ``extract_info(download=True)`` of ``video``."""
        workdir = self.videos_dir / f"{TMP_PREFIX}{video.video_id}"
        shutil.rmtree(workdir, ignore_errors=True)  # never resume what an earlier try left
        workdir.mkdir(parents=True)
        logger = YtDlpLog(video.video_id)
        duration_filter = DurationFilter(self.settings["max_duration"])
        params = ytdlp_params(self.settings, workdir, logger, duration_filter, captions, player_clients)
        if format_:
            params["format"] = format_.replace("{max_height}", str(self.settings["max_height"]))
        try:
            try:
                with yt_dlp.YoutubeDL(params) as ydl:
                    info = ydl.extract_info(video.source, download=True)
            except YoutubeDLError as exc:  # DownloadError, and the few errors yt-dlp raises as they are
                return _failure(exc, logger)
            if duration_filter.rejected:
                return Attempt(row=make_row(video.video_id, S.SKIPPED, duration_filter.rejected, verdict=Verdict.VIDEO))
            return self.keep_files(video, info or {}, workdir, logger)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def check(self, label: str, url: str) -> Attempt:
        """Extract ``url`` without downloading (a canary: does the server still serve a known video?)."""
        workdir = self.videos_dir / f"{TMP_PREFIX}canary-{label}"
        logger = YtDlpLog(f"canary {label}")
        params = ytdlp_params(self.settings, workdir, logger, None, captions=False)
        try:
            with yt_dlp.YoutubeDL(params) as ydl:
                info = ydl.extract_info(url, download=False)
        except YoutubeDLError as exc:
            return _failure(exc, logger)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return Attempt(row=make_row(label, S.OK, duration=(info or {}).get("duration")))

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
        languages = list(self.settings["caption_languages"])
        preference = {lang: i for i, lang in enumerate(languages)}
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
        return Attempt(row=make_row(video.video_id, S.OK, size=size, duration=duration, path=final,
                                    captions_path=captions_path))
