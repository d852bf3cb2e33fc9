"""Turn a yt-dlp failure into a download-ledger status.

yt-dlp reports every failure as ``DownloadError``; what matters for a bulk run is *why*:
a video that is gone will never download (record it, never retry), a rate limit is about our IP
or session (pause the whole shard, retry in a later run), a network hiccup is worth a few
retries now, an upcoming stream is not gone but not yet there, and a broken extractor is our
problem (stop before it turns the shard into failures).

The reason text is YouTube's own playability message, so we match case-insensitive stable
substrings (research: ytdlp_2026.md, pipeline_anchors.md section 5.3), with the typographic
apostrophe (U+2019) YouTube now uses read as a plain one. When yt-dlp kept the original exception
(``DownloadError.exc_info[1]``, an ``ExtractorError.cause``) its type or HTTP status is used first.

Some answers look like a verdict on the video but are about us or about yt-dlp; the classifier
names them so the shard's policy can act (mcnflow.download.policy):

- "This content isn't available." (no "try again later") is ``unavailable``, but a run of such
  answers is what an IP / account block looks like: the policy asks a canary video (canary.py);
- "Playback on other websites has been disabled by the video owner (web_embedded ...)" is a yt-dlp
  bug (#17497), not a gone video: :func:`wants_other_client` says to try again with other player
  clients; if that fails too the row is a retryable ``error``;
- "Requested format is not available" on one video is that video's ``error``; the same answer
  again and again is a missing JavaScript runtime (or a format setting that matches nothing):
  :func:`is_format_unavailable` lets the policy count them and stop the shard as systemic.
"""

from __future__ import annotations

import errno
import re
from typing import Iterable, NamedTuple

from yt_dlp.cookies import CookieLoadError
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import ContentTooShortError, GeoRestrictedError

from mcnflow.core.status import DownloadStatus as S


class Classification(NamedTuple):
    status: str       # one of DownloadStatus
    retryable: bool   # a later try may succeed (the video itself is not the problem)
    systemic: bool    # our side is broken (extractor, disk, cookies): stop the shard


RATE_LIMITED = Classification(S.RATE_LIMITED, True, False)
TRANSIENT = Classification(S.TRANSIENT, True, False)
NOT_YET = Classification(S.NOT_YET, True, False)
SYSTEMIC = Classification(S.ERROR, True, True)
PLAYER_BUG = Classification(S.ERROR, True, False)   # yt-dlp's fault, not the video's: a later run retries
UNKNOWN = Classification(S.ERROR, False, False)
UNAVAILABLE = Classification(S.UNAVAILABLE, False, False)
PRIVATE = Classification(S.PRIVATE, False, False)
REMOVED = Classification(S.REMOVED, False, False)
GEO_BLOCKED = Classification(S.GEO_BLOCKED, False, False)
LOGIN_REQUIRED = Classification(S.LOGIN_REQUIRED, False, False)

# The message of rows the policy rewrote when it stopped a shard for a failure repeated on many
# videos (see policy.py): it classifies as systemic, so a rerun retries those videos.
REPEATED_SYSTEMIC = "systemic, repeated on"

_EMBED_DISABLED = ("playback on other websites has been disabled", "web_embedded player response")
_FORMAT_UNAVAILABLE = ("requested format is not available", "requested format not available")

# Checked in this order: the first match wins. Order matters where YouTube combines texts, e.g.
# "Video unavailable. This content isn't available, try again later." is a rate limit,
# "Video unavailable. This video has been removed by the uploader" is a removal and
# "Video unavailable. Playback on other websites has been disabled ..." is yt-dlp's bug.
_MESSAGE_RULES: tuple[tuple[Classification, tuple[str, ...]], ...] = (
    (RATE_LIMITED, (
        "not a bot",                          # "Sign in to confirm you’re not a bot" (U+2019), "you are not a bot"
        "try again later",                    # "This content isn't available, try again later."
        "rate-limited by youtube",
        "http error 429", "too many requests",
        "captcha",
        "your ip is likely being blocked",
        "http error 402",
    )),
    (SYSTEMIC, (
        REPEATED_SYSTEMIC,
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
    (NOT_YET, (
        "live event will begin",              # "This live event will begin in 3 hours."
        "premieres in",                       # "Premieres in 5 hours"
        "premiere will begin",
        "waiting for scheduled stream",
    )),
    (PLAYER_BUG, _EMBED_DISABLED),
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
        "available to this channel's members",
    )),
    (UNAVAILABLE, (
        "video unavailable",
        "this video is not available",
        "this content isn't available",       # without "try again later": see the module docstring
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
    return (message or "").replace("\u2019", "'").lower()


def classify_message(message: str) -> Classification:
    """Classify by the text alone (what a stored ledger message still allows)."""
    text = _normalize(message)
    for verdict, needles in _MESSAGE_RULES:
        if any(needle in text for needle in needles) or (verdict is TRANSIENT and _HTTP_5XX.search(text)):
            return verdict
    return UNKNOWN


def wants_other_client(message: str) -> bool:
    """The embed-disabled answer of the web_embedded player (yt-dlp #17497): other clients may work."""
    text = _normalize(message)
    return any(needle in text for needle in _EMBED_DISABLED)


def is_format_unavailable(message: str) -> bool:
    """"Requested format is not available": one video's problem once, ours when it repeats."""
    text = _normalize(message)
    return any(needle in text for needle in _FORMAT_UNAVAILABLE)


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
    "n challenge solving failed", "No supported JavaScript runtime" or bot-check warning is that
    problem in disguise.
    """
    verdict = classify_exception(exc) or classify_message(message)
    if verdict is UNKNOWN:
        for warning in warnings:
            hint = classify_message(warning)
            if hint is RATE_LIMITED or hint is SYSTEMIC:
                return hint
    return verdict
