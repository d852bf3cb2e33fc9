"""The yt-dlp message classifier on real message texts (research: pipeline_anchors.md section 5.3)."""

import errno

import pytest
from yt_dlp.networking.common import Response
from yt_dlp.networking.exceptions import HTTPError, IncompleteRead, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError

from mcnflow.core.ledger import DOWNLOAD_STATUSES
from mcnflow.download.classify import (REPEATED_SYSTEMIC, classify, classify_message, is_format_unavailable,
                                      wants_other_client)

# (message as yt-dlp prints it, status, retryable, systemic)
REAL_MESSAGES = [
    ("ERROR: [youtube] abcdefghijk: Private video. Sign in if you've been granted access to this video. "
     "Use --cookies-from-browser or --cookies for the authentication.", "private", False, False),
    ("ERROR: [youtube] abcdefghijk: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or "
     "--cookies for the authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-cookies-to-yt-dlp",
     "rate_limited", True, False),
    ("Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for the authentication.",
     "rate_limited", True, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This video is no longer available because the YouTube "
     "account associated with this video has been terminated.", "removed", False, False),
    ("This video is no longer available because the YouTube account associated with this video has been terminated.",
     "removed", False, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This video has been removed by the uploader",
     "removed", False, False),
    ("Video unavailable. This video is no longer available because the uploader has closed their YouTube account.",
     "removed", False, False),
    ("Video unavailable. This video is no longer available due to a copyright claim by Some Label",
     "removed", False, False),
    ("Video unavailable. This video has been removed for violating YouTube's Terms of Service",
     "removed", False, False),
    ("Video unavailable. This video has been removed for violating YouTube\u2019s Community Guidelines",
     "removed", False, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable", "unavailable", False, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This video is not available", "unavailable", False, False),
    ("This video does not exist.", "unavailable", False, False),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found (caused by <HTTPError 404: Not Found>)",
     "unavailable", False, False),
    ("The uploader has not made this video available in your country\nThis video is available in Germany.\n"
     "You might want to use a VPN or a proxy server (with --proxy) to workaround.", "geo_blocked", False, False),
    ("ERROR: [youtube] abcdefghijk: Sign in to confirm your age. This video may be inappropriate for some users. "
     "Use --cookies-from-browser or --cookies for the authentication.", "login_required", False, False),
    ("Join this channel to get access to members-only content like this video, and other exclusive perks.",
     "login_required", False, False),
    ("ERROR: [youtube] abcdefghijk: This video is age-restricted", "login_required", False, False),
    ("This content isn't available, try again later.", "rate_limited", True, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This content isn't available, try again later. The current "
     "session has been rate-limited by YouTube for up to an hour.", "rate_limited", True, False),
    ("HTTP Error 429: Too Many Requests", "rate_limited", True, False),
    ("ERROR: unable to download video data: HTTP Error 402: Payment Required", "rate_limited", True, False),
    ("ERROR: [youtube] abcdefghijk: All player responses are invalid. Your IP is likely being blocked by Youtube",
     "rate_limited", True, False),
    ("Video unavailable. YouTube is requiring a captcha challenge before playback", "rate_limited", True, False),
    ("ERROR: unable to download video data: HTTP Error 403: Forbidden", "transient", True, False),
    ("ERROR: unable to download video data: HTTP Error 503: Service Unavailable", "transient", True, False),
    ("ERROR: The downloaded file is empty", "transient", True, False),
    ("ERROR: Did not get any data blocks", "transient", True, False),
    ("ERROR: content too short (expected 20896 bytes and served 10000)", "transient", True, False),
    ("ERROR: unable to download video data: Read timed out.", "transient", True, False),
    ("ERROR: unable to download video data: [Errno 104] Connection reset by peer", "transient", True, False),
    ("ERROR: [generic] x: Unable to download webpage: [Errno 111] Connection refused", "transient", True, False),
    ("IncompleteRead(10000 bytes read, 10896 more expected)", "transient", True, False),
    ("ERROR: \r[download] Got error: 5000 bytes read, 15896 more expected", "transient", True, False),
    ("nsig extraction failed: Some formats may be missing", "error", True, True),
    ("n challenge solving failed: Some formats may be missing. Ensure you have a supported JavaScript runtime",
     "error", True, True),
    ("ERROR: [youtube] abcdefghijk: Unable to extract yt initial data; please report this issue on  "
     "https://github.com/yt-dlp/yt-dlp/issues", "error", True, True),
    ("ERROR: [youtube] abcdefghijk: Failed to extract any player response; please report this issue", "error", True, True),
    ("ERROR: [youtube] abcdefghijk: No player clients have been requested", "error", True, True),
    ("failed to load cookies", "error", True, True),
    ("ERROR: '/home/u/cookies.txt' does not look like a Netscape format cookies file", "error", True, True),
    ("ERROR: Requested format is not available. Use --list-formats for a list of available formats",
     "error", False, False),
    ("ERROR: something nobody has seen before", "error", False, False),
]


@pytest.mark.parametrize("message, status, retryable, systemic", REAL_MESSAGES,
                         ids=[m[0][:60] for m in REAL_MESSAGES])
def test_real_messages(message, status, retryable, systemic):
    verdict = classify(message)
    assert (verdict.status, verdict.retryable, verdict.systemic) == (status, retryable, systemic)
    assert verdict.status in DOWNLOAD_STATUSES
    # a stored (ledger) message classifies the same way
    assert classify_message(message) == verdict
    # it is a plain 3-tuple as well
    assert tuple(verdict) == (status, retryable, systemic)


def test_matching_ignores_case():
    assert classify("VIDEO UNAVAILABLE").status == "unavailable"
    assert classify("private VIDEO").status == "private"


def _http_error(status: int) -> HTTPError:
    import io
    return HTTPError(Response(io.BytesIO(b""), "http://127.0.0.1/x", {}, status=status))


def _download_error(original: BaseException, text: str) -> DownloadError:
    """What YoutubeDL.trouble raises: the message plus the original exception in exc_info."""
    return DownloadError(text, (type(original), original, None))


@pytest.mark.parametrize("status, expected", [(404, "unavailable"), (410, "unavailable"), (429, "rate_limited"),
                                              (402, "rate_limited"), (403, "transient"), (500, "transient"),
                                              (503, "transient")])
def test_original_http_status_wins_over_text(status, expected):
    # The text says nothing useful; the kept HTTPError decides.
    exc = _download_error(_http_error(status), "ERROR: [generic] x: Unable to download webpage")
    assert classify(str(exc), exc).status == expected


def test_http_error_inside_extractor_error_cause():
    cause = _http_error(429)
    extractor_error = ExtractorError("Unable to download API page", cause=cause)
    exc = _download_error(extractor_error, f"ERROR: {extractor_error}")
    assert classify(str(exc), exc).status == "rate_limited"


def test_geo_restricted_error_type():
    original = GeoRestrictedError("This video is blocked", countries=["DE"])
    exc = _download_error(original, "ERROR: [youtube] x: This video is blocked")
    assert classify(str(exc), exc).status == "geo_blocked"


def test_network_exception_types_are_transient():
    for original in (TransportError(cause=ConnectionResetError()), IncompleteRead(100, 200), TimeoutError()):
        exc = _download_error(original, "ERROR: unable to download video data: something odd")
        assert classify(str(exc), exc).status == "transient", original


def test_disk_full_is_systemic():
    original = OSError(errno.ENOSPC, "No space left on device")
    exc = _download_error(original, "ERROR: unable to write")
    assert classify(str(exc), exc).systemic


def test_format_error_after_bot_warning_is_the_bot_check():
    warnings = ["[youtube] x: Sign in to confirm you\u2019re not a bot. This helps protect our community."]
    message = "ERROR: [youtube] x: Requested format is not available. Use --list-formats for a list of available formats"
    assert classify(message).status == "error"
    assert classify(message, warnings=warnings).status == "rate_limited"
    nsig = ["[youtube] x: nsig extraction failed: Some formats may be missing"]
    assert classify(message, warnings=nsig).systemic
    # a definite error is not overridden by a warning
    assert classify("Private video. Sign in if you've been granted access", warnings=warnings).status == "private"


# --- issue 13: answers that look like a verdict on the video but are about us or about yt-dlp ------

PREFIX = "ERROR: [youtube] abcdefghijk: "
APOSTROPHES = pytest.mark.parametrize("apostrophe", ["\u2019", "'"], ids=["curly", "straight"])


@APOSTROPHES
@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["bare", "yt-dlp"])
def test_content_not_available_is_unavailable_and_left_to_the_canary(apostrophe, prefix):
    # Permanent by its words; a run of them is what a block looks like (policy.py asks a canary).
    for message in (f"Video unavailable. This content isn{apostrophe}t available.",
                    f"This content isn{apostrophe}t available."):
        assert tuple(classify(prefix + message)) == ("unavailable", False, False), message
        assert not is_format_unavailable(prefix + message) and not wants_other_client(prefix + message)


@APOSTROPHES
def test_content_not_available_try_again_later_is_a_rate_limit(apostrophe):
    message = (f"{PREFIX}Video unavailable. This content isn{apostrophe}t available, try again later. The current "
               "session has been rate-limited by YouTube for up to an hour.")
    assert tuple(classify(message)) == ("rate_limited", True, False)


@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["bare", "yt-dlp"])
def test_embed_disabled_is_a_player_bug_retried_with_other_clients(prefix):
    message = (prefix + "Video unavailable. Playback on other websites has been disabled by the video owner "
               "(web_embedded player response playability status: UNPLAYABLE)")
    verdict = classify(message)
    assert tuple(verdict) == ("error", True, False)  # not gone: retried (a later run, and another client now)
    assert wants_other_client(message)
    assert not wants_other_client("Video unavailable. This video is not available")


@pytest.mark.parametrize("message", [
    "This live event will begin in 3 hours.",
    "This live event will begin in 15 minutes.",
    "This live event will begin in 2 days.",
    "Premieres in 5 hours",
    PREFIX + "This live event will begin in 3 hours.",
    PREFIX + "Premieres in 5 hours",
])
def test_upcoming_live_and_premieres_are_not_yet(message):
    verdict = classify(message)
    assert tuple(verdict) == ("not_yet", True, False)
    assert verdict.status in DOWNLOAD_STATUSES


def test_requested_format_once_is_the_videos_error_and_recognised_for_counting():
    message = "ERROR: [youtube] abcdefghijk: Requested format is not available. Use --list-formats for a list of " \
              "available formats"
    assert tuple(classify(message)) == ("error", False, False)  # one video: its own error
    assert is_format_unavailable(message) and is_format_unavailable("Requested format is not available")
    # the rows the policy rewrites when it repeats are systemic, so a rerun retries them
    rewritten = f"{REPEATED_SYSTEMIC} 3 videos in a row: {message}"
    assert classify_message(rewritten).systemic and classify_message(rewritten).retryable
    # after the "no JavaScript runtime" warning it is that problem
    warning = ("[youtube] abcdefghijk: No supported JavaScript runtime could be found. Only deno is enabled by "
               "default; to use another runtime add  --js-runtimes RUNTIME[:PATH]  to your command/config.")
    assert classify(message, warnings=[warning]).systemic


@APOSTROPHES
def test_bot_check_and_members_only_with_either_apostrophe(apostrophe):
    assert classify(f"{PREFIX}Sign in to confirm you{apostrophe}re not a bot").status == "rate_limited"
    assert classify(f"{PREFIX}Sign in to confirm you are not a bot").status == "rate_limited"
    assert classify(f"{PREFIX}This video is available to this channel{apostrophe}s members on level: Gold").status \
        == "login_required"
    assert classify(f"{PREFIX}Video unavailable. This video has been removed for violating YouTube{apostrophe}s "
                    "policy on hate speech").status == "removed"
