"""Turn a yt-dlp failure into a download-ledger status.

yt-dlp reports every failure as ``DownloadError``; what matters for a bulk run is *why*:
a video that is gone will never download (record it, never retry), a rate limit is about our IP
or session (pause the whole shard, retry in a later run), a network hiccup is worth a few
retries now, and a broken extractor is our problem (stop before it turns the shard into failures).

The reason text is YouTube's own playability message, so we match case-insensitive stable
substrings (docs/research: pipeline_anchors.md section 5.3). When yt-dlp kept the original exception
(``DownloadError.exc_info[1]``, an ``ExtractorError.cause``) its type or HTTP status is used first.
"""

from __future__ import annotations

import errno
import re
from typing import Iterable, NamedTuple

from yt_dlp.cookies import CookieLoadError
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import ContentTooShortError, GeoRestrictedError


class Classification(NamedTuple):
    status: str       # one of ledger.DOWNLOAD_STATUSES
    retryable: bool   # a later try may succeed (the video itself is not the problem)
    systemic: bool    # our side is broken (extractor, disk, cookies): stop the shard


RATE_LIMITED = Classification("rate_limited", True, False)
TRANSIENT = Classification("transient", True, False)
SYSTEMIC = Classification("error", True, True)
UNKNOWN = Classification("error", False, False)
UNAVAILABLE = Classification("unavailable", False, False)
PRIVATE = Classification("private", False, False)
REMOVED = Classification("removed", False, False)
GEO_BLOCKED = Classification("geo_blocked", False, False)
LOGIN_REQUIRED = Classification("login_required", False, False)

# Checked in this order: the first match wins. Order matters where YouTube combines texts, e.g.
# "Video unavailable. This content isn't available, try again later." is a rate limit, and
# "Video unavailable. This video has been removed by the uploader" is a removal.
_MESSAGE_RULES: tuple[tuple[Classification, tuple[str, ...]], ...] = (
    (RATE_LIMITED, (
        "not a bot",                          # "Sign in to confirm you’re not a bot" (U+2019)
        "try again later",                    # "This content isn't available, try again later."
        "rate-limited by youtube",
        "http error 429", "too many requests",
        "captcha",
        "your ip is likely being blocked",
        "http error 402",
    )),
    (SYSTEMIC, (
        "nsig extraction failed",
        "n challenge solving failed",
        "signature solving failed",
        "no supported javascript runtime",
        "unable to extract",
        "failed to extract any player response",
        "no player clients",
        "ffmpeg is not installed",
        "no space left on device",
        "failed to load cookies",             # CookieLoadError: a broken cookies_file
        "netscape format cookies file",       # "... does not look like a Netscape format cookies file"
    )),
    (PRIVATE, ("private video", "this video is private")),
    (REMOVED, (
        "removed by the uploader",
        "account associated with this video has been terminated",
        "closed their youtube account",
        "copyright claim",
        "violating youtube's",
    )),
    (GEO_BLOCKED, ("not made this video available in your country", "in your country")),
    (LOGIN_REQUIRED, (
        "sign in to confirm your age",
        "age-restricted",
        "inappropriate for some users",
        "members-only",
        "join this channel",
    )),
    (UNAVAILABLE, (
        "video unavailable",
        "this video is not available",
        "does not exist",
        "http error 404",
        "http error 410",
    )),
    (TRANSIENT, (
        "http error 403",
        "http error 408",
        "the downloaded file is empty",
        "incomplete data",
        "incompleteread",
        "more expected",                      # IncompleteRead: "5000 bytes read, 15896 more expected"
        "[download] got error",               # the HTTP downloader ran out of retries (5xx, reset, short read)
        "content too short",
        "did not get any data blocks",
        "timed out", "timeout",
        "connection reset", "connection refused", "connection aborted",
        "remote end closed connection",
        "temporary failure in name resolution",
        "network is unreachable",
    )),
)
_HTTP_5XX = re.compile(r"http error 5\d\d")


def _normalize(message: str) -> str:
    return message.replace("\u2019", "'").lower()


def classify_message(message: str) -> Classification:
    """Classify by the text alone (what a stored ledger message still allows)."""
    text = _normalize(message or "")
    for verdict, needles in _MESSAGE_RULES:
        if any(needle in text for needle in needles) or (verdict is TRANSIENT and _HTTP_5XX.search(text)):
            return verdict
    return UNKNOWN


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


def classify_exception(exc: BaseException | None) -> Classification | None:
    """Classify by exception type / HTTP status; None when the types say nothing definite."""
    for item in _exception_chain(exc):
        if isinstance(item, GeoRestrictedError):
            return GEO_BLOCKED
        if isinstance(item, CookieLoadError):
            return SYSTEMIC
        if isinstance(item, HTTPError):
            status = item.status
            if status in (402, 429):
                return RATE_LIMITED
            if status in (404, 410):
                return UNAVAILABLE
            if status in (403, 408) or 500 <= status <= 599:
                return TRANSIENT
        if isinstance(item, OSError) and item.errno == errno.ENOSPC:
            return SYSTEMIC
        if isinstance(item, (TransportError, ContentTooShortError, TimeoutError, ConnectionError)):
            return TRANSIENT
    return None


def classify(message: str, exc: BaseException | None = None, warnings: Iterable[str] = ()) -> Classification:
    """Status for a failed download: ``(status, retryable, systemic)``.

    ``message`` is ``str(DownloadError)``; ``exc`` the raised exception (its kept original is
    looked at first); ``warnings`` what yt-dlp warned during the attempt, consulted only when the
    error itself says nothing definite: e.g. "Requested format is not available" right after an
    "n challenge solving failed" or bot-check warning is that problem in disguise.
    """
    verdict = classify_exception(exc) or classify_message(message)
    if verdict is UNKNOWN:
        for warning in warnings:
            hint = classify_message(warning)
            if hint is RATE_LIMITED or hint is SYSTEMIC:
                return hint
    return verdict
