"""Every per-video status vocabulary, in one place (docs/ledgers.md explains each value).

They are ``StrEnum`` s, so a status compares equal to the string a ledger stores
(``DownloadStatus.OK == "ok"``) and ledgers stay plain TSV.
"""

from __future__ import annotations

from enum import StrEnum


class DownloadStatus(StrEnum):
    OK = "ok"
    # gone for good: the answer was about the video itself
    UNAVAILABLE = "unavailable"
    PRIVATE = "private"
    REMOVED = "removed"
    GEO_BLOCKED = "geo_blocked"
    LOGIN_REQUIRED = "login_required"
    # retried by a later run: the answer was about us (our IP, session, account), not the video
    RATE_LIMITED = "rate_limited"
    BLOCKED = "blocked"          # answered as gone while a known-good canary video failed too
    TRANSIENT = "transient"
    NOT_YET = "not_yet"          # an upcoming live stream or premiere: it exists, later
    # filtered out on purpose (e.g. longer than download.max_duration); not retried
    SKIPPED = "skipped"
    ERROR = "error"              # an answer nobody recognised (or a bad manifest row): retried by later runs
    # a retryable failure whose cross-run attempt budget is spent (download.retry_budget); never "gone":
    # `mcnflow download --retry given_up` asks again, e.g. after a yt-dlp upgrade
    GIVEN_UP = "given_up"


class Verdict(StrEnum):
    """Who an answer was about, decided when it arrives and stored in the ledger (resume reads it)."""
    VIDEO = "video"      # the answer names the video (YouTube's playability reason): the only terminal class
    US = "us"            # our setup: cookies, disk, JavaScript runtime, ffmpeg
    YTDLP = "yt-dlp"     # yt-dlp misread the site: extractor breakage, player bugs, texts nobody recognised
    NETWORK = "network"  # a connection, a server error, an expired CDN URL, an API page
    BLOCK = "block"      # our IP / session is rate limited or blocked
    INPUT = "input"      # the manifest row itself (no request was made)


DOWNLOAD_PERMANENT = (DownloadStatus.UNAVAILABLE, DownloadStatus.PRIVATE, DownloadStatus.REMOVED,
                      DownloadStatus.GEO_BLOCKED, DownloadStatus.LOGIN_REQUIRED)
DOWNLOAD_RETRYABLE = (DownloadStatus.RATE_LIMITED, DownloadStatus.BLOCKED, DownloadStatus.TRANSIENT,
                      DownloadStatus.NOT_YET, DownloadStatus.ERROR)


class DownloadOutcome(StrEnum):
    """What a download status means for a corpus (survival.tsv's ``outcome`` column, the report's chart)."""
    SURVIVED = "survived"        # ok
    GONE = "gone"                # the video is gone; the status says which way
    BLOCKED = "blocked"          # tried, and the answer was about us (rate limit, bot check, block)
    NOT_YET = "not_yet"          # upcoming: a later run tries again
    NEVER_TRIED = "never_tried"  # a retryable row the job never asked the server about (attempts 0)
    FAILED = "failed"            # transient failures and errors
    GIVEN_UP = "given_up"        # retried until the attempt budget ran out; not known to be gone
    SKIPPED = "skipped"          # filtered out on purpose


DOWNLOAD_OUTCOMES: dict[DownloadStatus, DownloadOutcome] = {
    DownloadStatus.OK: DownloadOutcome.SURVIVED,
    **{status: DownloadOutcome.GONE for status in DOWNLOAD_PERMANENT},
    DownloadStatus.RATE_LIMITED: DownloadOutcome.BLOCKED,
    DownloadStatus.BLOCKED: DownloadOutcome.BLOCKED,
    DownloadStatus.TRANSIENT: DownloadOutcome.FAILED,
    DownloadStatus.NOT_YET: DownloadOutcome.NOT_YET,
    DownloadStatus.SKIPPED: DownloadOutcome.SKIPPED,
    DownloadStatus.ERROR: DownloadOutcome.FAILED,
    DownloadStatus.GIVEN_UP: DownloadOutcome.GIVEN_UP,
}


class NormalizeStatus(StrEnum):
    OK = "ok"                          # normalized and verified with ffprobe
    NOT_DOWNLOADED = "not_downloaded"  # the download ledger has no file for it (see that ledger for why)
    EMPTY_INPUT = "empty_input"        # zero-byte input
    NO_VIDEO = "no_video"              # input has no video stream
    CORRUPT = "corrupt"                # ffmpeg/ffprobe could not decode the input
    VERIFY_FAILED = "verify_failed"    # output did not match size / fps / duration
    ERROR = "error"                    # anything else (message says what)


class FeatureStatus(StrEnum):
    OK = "ok"
    NO_AUDIO = "no_audio"
    NO_MEDIA = "no_media"
    NO_CAPTIONS = "no_captions"
    TOO_SHORT = "too_short"
    ERROR = "error"


def values(enum: type[StrEnum]) -> tuple[str, ...]:
    """The enum's values in declaration order (what a ledger may contain)."""
    return tuple(member.value for member in enum)
