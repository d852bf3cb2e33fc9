"""The yt-dlp message classifier on real message texts (research: pipeline_anchors.md section 5.3)."""

import errno

import pytest
from yt_dlp.networking.common import Response
from yt_dlp.networking.exceptions import HTTPError, IncompleteRead, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError

from mcnflow.core.ledger import DOWNLOAD_STATUSES
from mcnflow.download.classify import (ANSWERS, REPEATED_SYSTEMIC, Retry, answers_markdown, classify,
                                      classify_message, is_format_unavailable, wants_other_client)

from conftest import REPO

# (message as yt-dlp prints it, status, verdict, retryable, systemic)
REAL_MESSAGES = [
    ("ERROR: [youtube] abcdefghijk: Private video. Sign in if you've been granted access to this video. "
     "Use --cookies-from-browser or --cookies for the authentication.", "private", "video", False, False),
    ("ERROR: [youtube] abcdefghijk: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or "
     "--cookies for the authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-cookies-to-yt-dlp",
     "rate_limited", "block", True, False),
    ("Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for the authentication.",
     "rate_limited", "block", True, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This video is no longer available because the YouTube "
     "account associated with this video has been terminated.", "removed", "video", False, False),
    ("This video is no longer available because the YouTube account associated with this video has been terminated.",
     "removed", "video", False, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This video has been removed by the uploader",
     "removed", "video", False, False),
    ("Video unavailable. This video is no longer available because the uploader has closed their YouTube account.",
     "removed", "video", False, False),
    ("Video unavailable. This video is no longer available due to a copyright claim by Some Label",
     "removed", "video", False, False),
    ("Video unavailable. This video has been removed for violating YouTube's Terms of Service",
     "removed", "video", False, False),
    ("Video unavailable. This video has been removed for violating YouTube\u2019s Community Guidelines",
     "removed", "video", False, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable", "unavailable", "video", False, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This video is not available", "unavailable", "video", False,
     False),
    ("This video does not exist.", "unavailable", "video", False, False),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found (caused by <HTTPError 404: Not Found>)",
     "unavailable", "video", False, False),
    ("The uploader has not made this video available in your country\nThis video is available in Germany.\n"
     "You might want to use a VPN or a proxy server (with --proxy) to workaround.", "geo_blocked", "video", False,
     False),
    ("ERROR: [youtube] abcdefghijk: Sign in to confirm your age. This video may be inappropriate for some users. "
     "Use --cookies-from-browser or --cookies for the authentication.", "login_required", "video", False, False),
    ("Join this channel to get access to members-only content like this video, and other exclusive perks.",
     "login_required", "video", False, False),
    ("ERROR: [youtube] abcdefghijk: This video is age-restricted", "login_required", "video", False, False),
    ("This content isn't available, try again later.", "rate_limited", "block", True, False),
    ("ERROR: [youtube] abcdefghijk: Video unavailable. This content isn't available, try again later. The current "
     "session has been rate-limited by YouTube for up to an hour.", "rate_limited", "block", True, False),
    ("HTTP Error 429: Too Many Requests", "rate_limited", "block", True, False),
    ("ERROR: unable to download video data: HTTP Error 402: Payment Required", "rate_limited", "block", True, False),
    ("ERROR: [youtube] abcdefghijk: All player responses are invalid. Your IP is likely being blocked by Youtube",
     "rate_limited", "block", True, False),
    ("Video unavailable. YouTube is requiring a captcha challenge before playback", "rate_limited", "block", True,
     False),
    ("ERROR: unable to download video data: HTTP Error 403: Forbidden", "transient", "network", True, False),
    ("ERROR: unable to download video data: HTTP Error 503: Service Unavailable", "transient", "network", True, False),
    ("ERROR: The downloaded file is empty", "transient", "network", True, False),
    ("ERROR: Did not get any data blocks", "transient", "network", True, False),
    ("ERROR: content too short (expected 20896 bytes and served 10000)", "transient", "network", True, False),
    ("ERROR: unable to download video data: Read timed out.", "transient", "network", True, False),
    ("ERROR: unable to download video data: [Errno 104] Connection reset by peer", "transient", "network", True,
     False),
    ("ERROR: [generic] x: Unable to download webpage: [Errno 111] Connection refused", "transient", "network", True,
     False),
    ("IncompleteRead(10000 bytes read, 10896 more expected)", "transient", "network", True, False),
    ("ERROR: \r[download] Got error: 5000 bytes read, 15896 more expected", "transient", "network", True, False),
    # 404s that are not about the video (issue 19): an innertube API page, an expired CDN URL, a fragment
    ("ERROR: [youtube] abcdefghijk: Unable to download API page: HTTP Error 404: Not Found (caused by "
     "<HTTPError 404: Not Found>)", "transient", "network", True, False),
    ("ERROR: unable to download video data: HTTP Error 404: Not Found", "transient", "network", True, False),
    ("ERROR: fragment 1 not found, unable to continue", "transient", "network", True, False),
    ("nsig extraction failed: Some formats may be missing", "error", "yt-dlp", True, True),
    ("n challenge solving failed: Some formats may be missing. Ensure you have a supported JavaScript runtime",
     "error", "yt-dlp", True, True),
    ("ERROR: [youtube] abcdefghijk: Unable to extract yt initial data; please report this issue on  "
     "https://github.com/yt-dlp/yt-dlp/issues", "error", "yt-dlp", True, True),
    ("ERROR: [youtube] abcdefghijk: Failed to extract any player response; please report this issue", "error",
     "yt-dlp", True, True),
    ("ERROR: [youtube] abcdefghijk: No player clients have been requested", "error", "us", True, True),
    ("failed to load cookies", "error", "us", True, True),
    ("ERROR: '/home/u/cookies.txt' does not look like a Netscape format cookies file", "error", "us", True, True),
    # not about the video, and not recognised or only once: retried by later runs (issue 19)
    ("ERROR: Requested format is not available. Use --list-formats for a list of available formats",
     "error", "yt-dlp", True, False),
    ("ERROR: something nobody has seen before", "error", "yt-dlp", True, False),
    ("ERROR: [youtube] abcdefghijk: The page needs to be reloaded.", "error", "yt-dlp", True, False),
    ("ERROR: Postprocessing: Conversion failed!", "error", "us", True, False),
    ("ERROR: [youtube] abcdefghijk: Error 153: Video player configuration error", "error", "yt-dlp", True, False),
]


@pytest.mark.parametrize("message, status, verdict_class, retryable, systemic", REAL_MESSAGES,
                         ids=[m[0][:60] for m in REAL_MESSAGES])
def test_real_messages(message, status, verdict_class, retryable, systemic):
    verdict = classify(message)
    assert (verdict.status, verdict.verdict, verdict.retryable, verdict.systemic) == \
        (status, verdict_class, retryable, systemic)
    assert verdict.status in DOWNLOAD_STATUSES
    # a stored (ledger) message classifies the same way
    assert classify_message(message) == verdict
    # only an answer that names the video is final
    assert verdict.retryable == (verdict.verdict != "video" or status == "not_yet")


@pytest.mark.parametrize("form", ANSWERS, ids=[f.needle[:40] for f in ANSWERS])
def test_every_form_of_the_table_classifies_its_own_example_and_names_its_source(form):
    assert form.needle == form.needle.lower() and form.needle in form.example.replace("\u2019", "'").lower()
    assert classify(form.example) == form.classification
    assert form.source
    # the terminal forms are exactly the ones about the video
    assert (form.classification.retry is Retry.NEVER) == (form.classification.verdict == "video"
                                                          and form.classification.status != "not_yet")


def test_docs_mirror_the_table():
    text = (REPO / "docs" / "ytdlp_answers.md").read_text(encoding="utf-8")
    assert answers_markdown() in text, "docs/ytdlp_answers.md is out of date: paste answers_markdown() into it"


def test_no_unrecognised_answer_is_final():
    # whatever yt-dlp says next year, an answer outside the table is asked again by a later run
    for message in ("The page needs to be reloaded.", "Some brand new YouTube wording", "",
                    "ERROR: [youtube] x: Got a 404 somewhere", "HTTP Error 404: Not Found"):
        assert classify(message).retryable, message


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
def test_content_not_available_is_a_block_symptom_never_final(apostrophe, prefix):
    # It does not name the video, and it is what an account / IP block looks like: retried, and a run
    # of them asks a canary (policy.py).
    for message in (f"Video unavailable. This content isn{apostrophe}t available.",
                    f"This content isn{apostrophe}t available."):
        verdict = classify(prefix + message)
        assert (verdict.status, verdict.verdict, verdict.retry) == ("blocked", "block", Retry.LATER), message
        assert not is_format_unavailable(prefix + message) and not wants_other_client(prefix + message)


@APOSTROPHES
def test_content_not_available_try_again_later_is_a_rate_limit(apostrophe):
    message = (f"{PREFIX}Video unavailable. This content isn{apostrophe}t available, try again later. The current "
               "session has been rate-limited by YouTube for up to an hour.")
    assert classify(message).status == "rate_limited" and classify(message).retry is Retry.COOLDOWN


@pytest.mark.parametrize("prefix", ["", PREFIX], ids=["bare", "yt-dlp"])
def test_embed_disabled_is_a_player_bug_retried_with_other_clients(prefix):
    message = (prefix + "Video unavailable. Playback on other websites has been disabled by the video owner "
               "(web_embedded player response playability status: UNPLAYABLE)")
    verdict = classify(message)
    assert (verdict.status, verdict.verdict, verdict.retry) == ("error", "yt-dlp", Retry.OTHER_CLIENT)
    assert wants_other_client(message)
    assert wants_other_client(prefix + "Error 153: Video player configuration error")
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
    assert (verdict.status, verdict.retryable, verdict.systemic) == ("not_yet", True, False)
    assert verdict.status in DOWNLOAD_STATUSES


def test_requested_format_once_is_retryable_and_recognised_for_counting():
    message = "ERROR: [youtube] abcdefghijk: Requested format is not available. Use --list-formats for a list of " \
              "available formats"
    verdict = classify(message)
    assert (verdict.status, verdict.retry) == ("error", Retry.STREAK)  # one video: retried by later runs
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


def test_a_rate_limit_warned_before_a_broken_player_response_is_a_cooldown_not_a_stop():
    # yt-dlp warns 429 / the bot check, then fails to extract: YouTube limited us, the extractor is fine
    message = "ERROR: [youtube] abcdefghijk: Failed to extract any player response; please report this issue"
    assert classify(message).systemic
    for warning in ("[youtube] abcdefghijk: HTTP Error 429: Too Many Requests",
                    "[youtube] abcdefghijk: Sign in to confirm you\u2019re not a bot"):
        verdict = classify(message, warnings=[warning])
        assert (verdict.status, verdict.retry) == ("rate_limited", Retry.COOLDOWN)


def test_http_404_names_the_video_only_on_its_own_page():
    page = _download_error(_http_error(404), "ERROR: [generic] x: Unable to download webpage")
    assert classify(str(page), page).status == "unavailable"
    api = ExtractorError("Unable to download API page", cause=_http_error(404))
    api_error = _download_error(api, f"ERROR: [youtube] x: {api}")
    assert (classify(str(api_error), api_error).status, classify(str(api_error), api_error).verdict) == \
        ("transient", "network")
    cdn = _download_error(_http_error(404), "ERROR: unable to download video data")
    assert classify(str(cdn), cdn).retryable
