"""Turn a yt-dlp failure into a download-ledger status, a verdict and a retry policy.

yt-dlp reports every failure as ``DownloadError``; what matters for a bulk run is *who the answer
was about* (:class:`~mcnflow.core.status.Verdict`). Only an answer that names the video (YouTube's
own playability reason, which yt-dlp passes through: removed, private, terminated account, copyright,
geo, age check, members-only) settles it as gone. Everything else is about us, yt-dlp, the network
or a block, and stays retryable: later runs ask again until the cross-run attempt budget
(``download.retry_budget``) ends in ``given_up``, a status of its own that is never called gone.
yt-dlp's texts change every few months, so a text nobody recognised is the common case and is
retryable by design.

:data:`ANSWERS` is the one table of recognised forms: the text fragment matched (case-insensitive,
YouTube's typographic apostrophe read as a plain one), a real example, the status, the verdict, the
retry policy and where the text comes from in yt-dlp. docs/ytdlp_answers.md is rendered from it
(:func:`answers_markdown`; a test keeps the two equal). Forms are tried in table order, first match
wins: YouTube joins reason and subreason with ". ", so "Video unavailable. This content isn't
available, try again later." must meet the rate-limit form before the unavailable one.

When yt-dlp kept the original exception (``DownloadError.exc_info[1]``, an ``ExtractorError.cause``),
a rate-limit HTTP status or a type that says it all (geo restriction, cookies, a full disk) decides
first; an HTTP status the text does not explain comes after the table. yt-dlp's warnings during
the attempt refine an answer that does not name the video: a bot check or HTTP 429 warned before
"Failed to extract any player response" is a rate limit (cool down), not a broken extractor.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterable, NamedTuple

from yt_dlp.cookies import CookieLoadError
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import ContentTooShortError, GeoRestrictedError

from mcnflow.core.status import DownloadStatus as S, Verdict as V


class Retry(StrEnum):
    """What happens after an answer (policy.py and resume.py act on it)."""
    NEVER = "never: the video is gone"
    BACKOFF = "again in the job with back-off (download.attempts), then in later runs"
    LATER = "in later runs, until download.retry_budget is spent (then given_up)"
    COOLDOWN = "download.rate_limit_burst in a row pause the shard (download.cooldown); later runs"
    OTHER_CLIENT = "once more with download.embed_fallback_clients, then in later runs"
    FALLBACK_FORMAT = "once more with download.fallback_format, then in later runs"
    STREAK = "in later runs; download.format_unavailable_limit in a row stop the shard (exit 3)"
    STOP = "stops the shard (exit 3); the rerun after the fix asks again"


class Classification(NamedTuple):
    status: str      # one of DownloadStatus
    verdict: str     # one of Verdict: who the answer was about (stored in the ledger)
    retry: Retry

    @property
    def retryable(self) -> bool:
        """A later try may succeed: the answer did not name the video as gone."""
        return self.retry is not Retry.NEVER

    @property
    def systemic(self) -> bool:
        """Our side is broken for every video (extractor, disk, cookies, JS runtime): stop the shard."""
        return self.retry is Retry.STOP


RATE_LIMITED = Classification(S.RATE_LIMITED, V.BLOCK, Retry.COOLDOWN)
BLOCK_SYMPTOM = Classification(S.BLOCKED, V.BLOCK, Retry.LATER)
TRANSIENT = Classification(S.TRANSIENT, V.NETWORK, Retry.BACKOFF)
NOT_YET = Classification(S.NOT_YET, V.VIDEO, Retry.LATER)
EXTRACTOR_BROKEN = Classification(S.ERROR, V.YTDLP, Retry.STOP)
SETUP_BROKEN = Classification(S.ERROR, V.US, Retry.STOP)
PLAYER_BUG = Classification(S.ERROR, V.YTDLP, Retry.OTHER_CLIENT)
POSTPROCESSING = Classification(S.ERROR, V.US, Retry.FALLBACK_FORMAT)
FORMAT_UNAVAILABLE = Classification(S.ERROR, V.YTDLP, Retry.STREAK)
UNKNOWN = Classification(S.ERROR, V.YTDLP, Retry.LATER)
UNAVAILABLE = Classification(S.UNAVAILABLE, V.VIDEO, Retry.NEVER)
PRIVATE = Classification(S.PRIVATE, V.VIDEO, Retry.NEVER)
REMOVED = Classification(S.REMOVED, V.VIDEO, Retry.NEVER)
GEO_BLOCKED = Classification(S.GEO_BLOCKED, V.VIDEO, Retry.NEVER)
LOGIN_REQUIRED = Classification(S.LOGIN_REQUIRED, V.VIDEO, Retry.NEVER)

# The message of rows the policy rewrote when it stopped a shard for a failure repeated on many
# videos (see policy.py): it classifies as systemic, so a rerun retries those videos.
REPEATED_SYSTEMIC = "systemic, repeated on"

# Where the texts come from (paths in yt-dlp's source tree).
_PLAYABILITY = "YouTube's playability reason, passed through by extractor/youtube/_video.py"
_VIDEO_PY = "extractor/youtube/_video.py"
_NETWORKING = "networking/exceptions.py HTTPError (the HTTP status line)"
_DOWNLOADER = "downloader/http.py, downloader/fragment.py"


@dataclass(frozen=True)
class Form:
    needle: str                  # lower-case fragment matched in the normalised text
    example: str                 # a real text carrying it (tests classify every example)
    classification: Classification
    source: str                  # where the text comes from in yt-dlp


ANSWERS: tuple[Form, ...] = (
    # --- about us: rate limits and blocks (first: YouTube puts them after "Video unavailable.") --------
    Form("not a bot", "Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for the "
         "authentication.", RATE_LIMITED, _PLAYABILITY),
    Form("you are not a bot", "Sign in to confirm you are not a bot", RATE_LIMITED, _PLAYABILITY),
    Form("try again later", "Video unavailable. This content isn't available, try again later.",
         RATE_LIMITED, _PLAYABILITY),
    Form("rate-limited by youtube", "The current session has been rate-limited by YouTube for up to an hour.",
         RATE_LIMITED, _VIDEO_PY),
    Form("http error 429", "HTTP Error 429: Too Many Requests", RATE_LIMITED, _NETWORKING),
    Form("too many requests", "Too Many Requests", RATE_LIMITED, _NETWORKING),
    Form("http error 402", "unable to download video data: HTTP Error 402: Payment Required", RATE_LIMITED,
         _NETWORKING),
    Form("captcha", "Video unavailable. YouTube is requiring a captcha challenge before playback",
         RATE_LIMITED, _VIDEO_PY),
    Form("your ip is likely being blocked", "All player responses are invalid. Your IP is likely being blocked by "
         "Youtube", RATE_LIMITED, _VIDEO_PY),
    # "This content isn't available." without "try again later" is an account / IP block symptom
    # (ytdl-sub #1252), not a verdict on the video; a run of them asks the canary (policy.py).
    Form("this content isn't available", "Video unavailable. This content isn't available.", BLOCK_SYMPTOM,
         _PLAYABILITY),
    # --- our setup or yt-dlp broken for every video: stop the shard --------------------------------------
    Form(REPEATED_SYSTEMIC, f"{REPEATED_SYSTEMIC} 3 videos in a row: Requested format is not available",
         EXTRACTOR_BROKEN, "mcnflow policy.py (a per-video error repeated on many videos)"),
    Form("nsig extraction failed", "nsig extraction failed: Some formats may be missing", EXTRACTOR_BROKEN,
         _VIDEO_PY),
    Form("n challenge solving failed", "n challenge solving failed: Some formats may be missing. Ensure you have "
         "a supported JavaScript runtime", EXTRACTOR_BROKEN, "extractor/youtube/jsc (yt-dlp >= 2025.11)"),
    Form("signature solving failed", "Signature solving failed: Some formats may be missing", EXTRACTOR_BROKEN,
         "extractor/youtube/jsc (yt-dlp >= 2025.11)"),
    Form("no supported javascript runtime", "No supported JavaScript runtime could be found. Only deno is enabled "
         "by default", SETUP_BROKEN, "extractor/youtube/jsc (yt-dlp >= 2025.11)"),
    Form("unable to extract", "Unable to extract yt initial data; please report this issue on "
         "https://github.com/yt-dlp/yt-dlp/issues", EXTRACTOR_BROKEN, "extractor/common.py _search_regex"),
    Form("failed to extract any player response", "Failed to extract any player response; please report this "
         "issue", EXTRACTOR_BROKEN, _VIDEO_PY),
    Form("no player clients", "No player clients have been requested", SETUP_BROKEN, _VIDEO_PY),
    Form("ffmpeg is not installed", "You have requested merging of multiple formats but ffmpeg is not installed",
         SETUP_BROKEN, "YoutubeDL.py process_info"),
    Form("no space left on device", "[Errno 28] No space left on device", SETUP_BROKEN, "the OS (ENOSPC)"),
    Form("failed to load cookies", "failed to load cookies", SETUP_BROKEN, "cookies.py CookieLoadError"),
    Form("netscape format cookies file", "'/home/u/cookies.txt' does not look like a Netscape format cookies file",
         SETUP_BROKEN, "cookies.py"),
    # --- the video exists, but not yet --------------------------------------------------------------------
    Form("live event will begin", "This live event will begin in 3 hours.", NOT_YET, _PLAYABILITY),
    Form("premieres in", "Premieres in 5 hours", NOT_YET, _PLAYABILITY),
    Form("premiere will begin", "Premiere will begin shortly", NOT_YET, _PLAYABILITY),
    Form("waiting for scheduled stream", "Waiting for scheduled stream", NOT_YET, "YoutubeDL.py wait_for_video"),
    # --- yt-dlp's embedded-player bugs: another player client, once --------------------------------------
    Form("playback on other websites has been disabled", "Video unavailable. Playback on other websites has been "
         "disabled by the video owner (web_embedded player response playability status: UNPLAYABLE)",
         PLAYER_BUG, "YouTube's web_embedded playability reason (yt-dlp #17497)"),
    Form("web_embedded player response", "web_embedded player response playability status: UNPLAYABLE",
         PLAYER_BUG, _VIDEO_PY),
    Form("error 153", "Error 153: Video player configuration error", PLAYER_BUG,
         "YouTube's embedded player (reported in yt-dlp's tracker, 2025)"),
    Form("video player configuration error", "Video player configuration error", PLAYER_BUG,
         "YouTube's embedded player (reported in yt-dlp's tracker, 2025)"),
    # --- ffmpeg failed after the download: a fallback format once ----------------------------------------
    Form("postprocessing:", "Postprocessing: Conversion failed!", POSTPROCESSING, "YoutubeDL.py post_process"),
    # --- the answer names the video: gone for good ----------------------------------------------------------
    Form("private video", "Private video. Sign in if you've been granted access to this video", PRIVATE,
         _PLAYABILITY),
    Form("this video is private", "Video unavailable. This video is private", PRIVATE, _PLAYABILITY),
    Form("removed by the uploader", "Video unavailable. This video has been removed by the uploader", REMOVED,
         _PLAYABILITY),
    Form("account associated with this video has been terminated", "Video unavailable. This video is no longer "
         "available because the YouTube account associated with this video has been terminated.", REMOVED,
         _PLAYABILITY),
    Form("closed their youtube account", "This video is no longer available because the uploader has closed their "
         "YouTube account.", REMOVED, _PLAYABILITY),
    Form("copyright claim", "Video unavailable. This video is no longer available due to a copyright claim by "
         "Some Label", REMOVED, _PLAYABILITY),
    Form("removed for violating youtube's", "This video has been removed for violating YouTube's Terms of Service",
         REMOVED, _PLAYABILITY),
    Form("not made this video available in your country", "The uploader has not made this video available in your "
         "country", GEO_BLOCKED, _PLAYABILITY),
    Form("not available from your location", "This video is not available from your location due to geo "
         "restriction", GEO_BLOCKED, "extractor/common.py raise_geo_restricted"),
    Form("sign in to confirm your age", "Sign in to confirm your age. This video may be inappropriate for some "
         "users.", LOGIN_REQUIRED, _PLAYABILITY),
    Form("inappropriate for some users", "This video may be inappropriate for some users.", LOGIN_REQUIRED,
         _PLAYABILITY),
    Form("age-restricted", "This video is age-restricted", LOGIN_REQUIRED, _VIDEO_PY),
    Form("members-only", "Join this channel to get access to members-only content like this video, and other "
         "exclusive perks.", LOGIN_REQUIRED, _PLAYABILITY),
    Form("join this channel", "Join this channel from your computer or Android app to get access to this video",
         LOGIN_REQUIRED, _PLAYABILITY),
    Form("available to this channel's members", "This video is available to this channel's members on level: Gold",
         LOGIN_REQUIRED, _VIDEO_PY),
    Form("this video does not exist", "This video does not exist.", UNAVAILABLE, _PLAYABILITY),
    Form("this video is not available", "Video unavailable. This video is not available", UNAVAILABLE,
         _PLAYABILITY),
    Form("video unavailable", "Video unavailable", UNAVAILABLE, _PLAYABILITY),
    # The video's own page (a direct link) answered "gone"; an API page, a CDN URL or a fragment did not.
    Form("unable to download webpage: http error 404", "Unable to download webpage: HTTP Error 404: Not Found",
         UNAVAILABLE, "extractor/common.py _request_webpage"),
    Form("unable to download webpage: http error 410", "Unable to download webpage: HTTP Error 410: Gone",
         UNAVAILABLE, "extractor/common.py _request_webpage"),
    # --- the network, a server, an expired URL: back off, then later runs ---------------------------------
    Form("unable to download api page", "Unable to download API page: HTTP Error 404: Not Found", TRANSIENT,
         "extractor/youtube/_base.py _call_api (innertube)"),
    Form("fragment", "fragment 1 not found, unable to continue", TRANSIENT, _DOWNLOADER),
    Form("unable to download video data", "unable to download video data: HTTP Error 404: Not Found", TRANSIENT,
         "downloader/http.py (an expired CDN URL answers 403 or 404)"),
    Form("http error 404", "HTTP Error 404: Not Found", TRANSIENT, _NETWORKING),
    Form("http error 403", "HTTP Error 403: Forbidden", TRANSIENT, _NETWORKING),
    Form("http error 408", "HTTP Error 408: Request Timeout", TRANSIENT, _NETWORKING),
    Form("http error 410", "HTTP Error 410: Gone", TRANSIENT, _NETWORKING),
    Form("http error 5", "HTTP Error 503: Service Unavailable", TRANSIENT, _NETWORKING),
    Form("the downloaded file is empty", "The downloaded file is empty", TRANSIENT, "downloader/http.py"),
    Form("incomplete data", "Incomplete data received", TRANSIENT, _DOWNLOADER),
    Form("incompleteread", "IncompleteRead(10000 bytes read, 10896 more expected)", TRANSIENT, _NETWORKING),
    Form("more expected", "Got error: 5000 bytes read, 15896 more expected", TRANSIENT, _DOWNLOADER),
    Form("[download] got error", "[download] Got error: HTTP Error 502: Bad Gateway", TRANSIENT, _DOWNLOADER),
    Form("content too short", "content too short (expected 20896 bytes and served 10000)", TRANSIENT,
         "utils ContentTooShortError"),
    Form("did not get any data blocks", "Did not get any data blocks", TRANSIENT, "downloader/http.py"),
    Form("timed out", "unable to download video data: Read timed out.", TRANSIENT, _NETWORKING),
    Form("timeout", "Connection timeout", TRANSIENT, _NETWORKING),
    Form("connection reset", "[Errno 104] Connection reset by peer", TRANSIENT, "the OS"),
    Form("connection refused", "[Errno 111] Connection refused", TRANSIENT, "the OS"),
    Form("connection aborted", "Connection aborted.", TRANSIENT, "the OS"),
    Form("remote end closed connection", "Remote end closed connection without response", TRANSIENT, "http.client"),
    Form("temporary failure in name resolution", "[Errno -3] Temporary failure in name resolution", TRANSIENT,
         "the OS"),
    Form("network is unreachable", "[Errno 101] Network is unreachable", TRANSIENT, "the OS"),
    # --- one video's format: its own problem once, ours when it repeats -----------------------------------
    Form("requested format is not available", "Requested format is not available. Use --list-formats for a list "
         "of available formats", FORMAT_UNAVAILABLE, "YoutubeDL.py process_video_result"),
    Form("requested format not available", "requested format not available", FORMAT_UNAVAILABLE,
         "YoutubeDL.py (older wording)"),
)


def _normalize(message: str) -> str:
    return (message or "").replace("\u2019", "'").lower()


def classify_message(message: str) -> Classification:
    """Classify by the text alone: the first matching form of :data:`ANSWERS`, else UNKNOWN (retryable)."""
    text = _normalize(message)
    for form in ANSWERS:
        if form.needle in text:
            return form.classification
    return UNKNOWN


def wants_other_client(message: str) -> bool:
    """An embedded-player answer (yt-dlp #17497, Error 153): other player clients may work."""
    return classify_message(message) is PLAYER_BUG


def is_format_unavailable(message: str) -> bool:
    """"Requested format is not available": one video's problem once, ours when it repeats."""
    return classify_message(message) is FORMAT_UNAVAILABLE


def _exception_chain(exc: BaseException | None) -> Iterable[BaseException]:
    """``exc``, the exception yt-dlp kept inside it, and their causes (each once)."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        item = stack.pop(0)
        if item is None or id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        yield item
        exc_info = getattr(item, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1:
            stack.append(exc_info[1])
        stack.extend([getattr(item, "cause", None), item.__cause__, item.__context__])


def _definite_type(exc: BaseException | None) -> Classification | None:
    """Types that decide before any text: geo restriction, cookies, a full disk, a rate-limit status."""
    for item in _exception_chain(exc):
        if isinstance(item, GeoRestrictedError):
            return GEO_BLOCKED
        if isinstance(item, CookieLoadError):
            return SETUP_BROKEN
        if isinstance(item, OSError) and item.errno == errno.ENOSPC:
            return SETUP_BROKEN
        if isinstance(item, HTTPError) and item.status in (402, 429):
            return RATE_LIMITED
    return None


_NETWORK_STATUSES = (403, 404, 408, 410)
_WEBPAGE = re.compile(r"unable to download webpage\W*$")


def _transport_type(exc: BaseException | None, text: str) -> Classification | None:
    """An HTTP status or network error type the text did not explain."""
    for item in _exception_chain(exc):
        if isinstance(item, HTTPError):
            # 404 / 410 on the video's own page is about the video; on anything else it is not.
            if item.status in (404, 410) and _WEBPAGE.search(text):
                return UNAVAILABLE
            if item.status in _NETWORK_STATUSES or 500 <= item.status <= 599:
                return TRANSIENT
            return None  # another status (400, 401, ...): nobody recognised it, a later run asks again
        if isinstance(item, (TransportError, ContentTooShortError, TimeoutError, ConnectionError)):
            return TRANSIENT
    return None


def classify(message: str, exc: BaseException | None = None, warnings: Iterable[str] = ()) -> Classification:
    """Status, verdict and retry policy for a failed download.

    ``message`` is ``str(DownloadError)``; ``exc`` the raised exception (its kept original is looked
    at); ``warnings`` what yt-dlp warned during the attempt. A warned rate limit turns any answer
    that does not name the video into a rate limit; a warned broken extractor turns an answer nobody
    recognised (or "Requested format is not available") into that breakage.
    """
    text = _normalize(message)
    verdict = _definite_type(exc) or classify_message(message)
    if verdict is UNKNOWN:
        verdict = _transport_type(exc, text) or UNKNOWN
    if verdict.verdict == V.VIDEO and verdict.retry is Retry.NEVER:
        return verdict
    hints = [classify_message(warning) for warning in warnings]
    if RATE_LIMITED in hints:
        return RATE_LIMITED
    if verdict in (UNKNOWN, FORMAT_UNAVAILABLE):
        for hint in hints:
            if hint.systemic:
                return hint
    return verdict


def answers_markdown() -> str:
    """The table of :data:`ANSWERS` as docs/ytdlp_answers.md shows it."""
    lines = ["| # | matched text (case-insensitive) | status | verdict | retried | source in yt-dlp |",
             "|---|---|---|---|---|---|"]
    for number, form in enumerate(ANSWERS, start=1):
        c = form.classification
        lines.append(f"| {number} | `{form.needle}` | {c.status} | {c.verdict} | {c.retry.value} | {form.source} |")
    return "\n".join(lines) + "\n"
