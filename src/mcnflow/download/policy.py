"""The retry and cool-down policy over one shard: what to do after each answer.

- Transient failures (HTTP 5xx/403, timeouts, resets) are retried in the job with exponential
  back-off (``attempts``, ``backoff_initial``, ``backoff_max``).
- Every answer that does not name the video stays retryable across runs: each row carries its
  cross-run ``attempts`` and its first and last attempt time, and only when ``retry_budget``
  (attempts AND a minimum span of days, so one bad hour cannot spend it) is used up does a retryable
  failure become ``given_up``. Rate limits and systemic stops never spend it: they are about us.
- Rate-limit answers are about our IP, not the video: ``rate_limit_burst`` of them in a row pause
  the whole shard for ``cooldown`` seconds (and retry those videos).
- A run of gone answers that the observed survival makes implausible asks a canary video
  (canary.py). If the canary fails too, the run is reclassified ``blocked`` and the shard pauses
  exactly as for rate limits; if it answers, the gone answers stand.
- Any streak of failures (``canary.failure_streak`` in a row, of any kind, or a failure share over
  ``canary.failure_rate`` in the last ``canary.failure_window`` answers) asks the canary too: a
  passing canary resumes the shard; a canary blocked as well pauses it as for rate limits; a canary
  failing otherwise (yt-dlp broken by a YouTube change) stops the shard with exit 3, its rows
  retryable.
- After ``max_cooldowns`` pauses (rate limits and blocks together) the job stops contacting the
  server: every remaining video gets a ``rate_limited`` / ``blocked`` row that says it was not
  attempted, and the job exits 0 (a later run retries them).
- A broken extractor (nsig / "Unable to extract" / cookies / disk ...) is our problem: the job
  writes that video's journal row, logs a loud error and exits 3 without the final ledger, instead
  of turning the whole shard into failures. "Requested format is not available" on
  ``format_unavailable_limit`` videos in a row (an ok in between resets the count) is the same: it
  is how a missing JavaScript runtime looks. Those rows are rewritten so a rerun retries them.
"""

from __future__ import annotations

import collections
import datetime
import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from mcnflow.core.status import DOWNLOAD_PERMANENT, DownloadStatus as S, Verdict
from mcnflow.download.canary import Canary, CanaryAnswer, RunWatch
from mcnflow.download.classify import BLOCK_SYMPTOM, FORMAT_UNAVAILABLE, REPEATED_SYSTEMIC, Classification, Retry
from mcnflow.download.fetch import YTDLP_VERSION, Fetcher, Video, make_row

log = logging.getLogger(__name__)

EXIT_SYSTEMIC = 3   # the extractor (or disk, cookies, JS runtime) is broken: fix it, then rerun
NOT_ATTEMPTED = "not attempted: shard paused after repeated rate limiting"
NOT_ATTEMPTED_BLOCKED = "not attempted: shard paused after a block (a canary video failed too)"
ALIVE = (S.OK, S.SKIPPED, S.NOT_YET)  # answers that show the server serves this video's page
# Retry policies whose failures spend the video's cross-run budget; rate limits and systemic stops are about us.
BUDGETED = (Retry.BACKOFF, Retry.LATER, Retry.OTHER_CLIENT, Retry.FALLBACK_FORMAT, Retry.STREAK)
SECONDS_PER_DAY = 86400.0


def timestamp(seconds: float) -> str:
    """A ledger time: UTC, ISO 8601, to the second."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds_of(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def earlier_attempts(row: Mapping | None) -> int:
    try:
        return int((row or {}).get("attempts") or 0)
    except ValueError:
        return 0


@dataclass
class Outcome:
    row: dict
    verdict: Classification | None  # None: the video is done (ok / skipped)
    message: str = ""


class ShardPolicy:
    """Fetch a shard's videos in order, deciding after each answer what comes next."""

    def __init__(self, settings: Mapping, fetcher: Fetcher, record: Callable[[dict], None], shard_name: str,
                 watch: RunWatch, canary: Canary | None, history: Mapping[str, Mapping] | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.fetcher = fetcher
        self.record = record
        self.shard_name = shard_name
        self.watch = watch
        self.canary = canary
        # earlier rows by video id (attempts, first attempt); this job's answers join it as they come
        self.history: dict[str, Mapping] = dict(history or {})
        self.clock = clock
        self.cooldowns = 0
        self._warned_no_canary = False

    # --- one video --------------------------------------------------------------------------------

    def fetch(self, video: Video) -> Outcome:
        """Download ``video`` with up to ``attempts`` tries; transient failures back off in between."""
        attempts = self.settings["attempts"]
        attempt = 0
        while True:
            attempt += 1
            result = self.fetcher.fetch(video)
            if result.row is not None:
                return Outcome(self.stamp(result.row, attempt), None)
            verdict = result.verdict
            if verdict.retry is not Retry.BACKOFF or attempt >= attempts:
                row = self.stamp(make_row(video.video_id, verdict.status, result.message, verdict=verdict.verdict),
                                 attempt)
                if verdict.retry in BUDGETED and self.budget_spent(row):
                    row = self.given_up(row)
                return Outcome(row, verdict, result.message)
            delay = min(self.settings["backoff_initial"] * 2 ** (attempt - 1), self.settings["backoff_max"])
            log.info("%s: transient failure (try %d of %d), next try in %.1f s: %s",
                     video.video_id, attempt, attempts, delay, result.message)
            time.sleep(delay)

    def stamp(self, row: dict, tries: int) -> dict:
        """Add the cross-run history to ``row``: ``tries`` more requests now (0: the server was not asked)."""
        earlier = self.history.get(row["video_id"]) or {}
        row["attempts"] = earlier_attempts(earlier) + tries
        if tries:
            now = timestamp(self.clock())
            row.update(first_attempt=earlier.get("first_attempt") or now, last_attempt=now,
                       ytdlp_version=YTDLP_VERSION)
        else:
            row.update(first_attempt=earlier.get("first_attempt") or None,
                       last_attempt=earlier.get("last_attempt") or None,
                       ytdlp_version=earlier.get("ytdlp_version") or None)
        self.history[row["video_id"]] = row
        return row

    def budget_spent(self, row: Mapping) -> bool:
        """Both limits of ``retry_budget`` reached: enough requests, spread over enough days."""
        budget = self.settings["retry_budget"]
        first, last = seconds_of(row["first_attempt"]), seconds_of(row["last_attempt"])
        span_days = (last - first) / SECONDS_PER_DAY if first is not None and last is not None else 0.0
        return row["attempts"] >= budget["attempts"] and span_days >= budget["min_days"]

    def given_up(self, row: dict) -> dict:
        days = (seconds_of(row["last_attempt"]) - seconds_of(row["first_attempt"])) / SECONDS_PER_DAY
        message = (f"given up after {row['attempts']} attempts over {days:.1f} days (download.retry_budget); "
                   f"last answer ({row['status']}): {row['message']}")
        log.warning("%s: %s", row["video_id"], message)
        return {**row, "status": S.GIVEN_UP.value, "message": " ".join(message.split())}

    # --- the shard --------------------------------------------------------------------------------

    def run(self, videos: list[Video]) -> int:
        """Fetch ``videos``; 0 when every video has a row, EXIT_SYSTEMIC when the shard had to stop."""
        pending = collections.deque(videos)
        rate_streak: list[Video] = []             # rate limited in a row
        gone_run: list[tuple[Video, dict]] = []    # gone answers (and block symptoms) since the last alive one
        format_streak: list[dict] = []             # "Requested format is not available" since the last ok
        canary = self.settings["canary"]
        failure_streak = 0                         # failures of any kind in a row
        window: collections.deque[bool] = collections.deque(maxlen=canary["failure_window"])
        burst = self.settings["rate_limit_burst"]
        format_limit = self.settings["format_unavailable_limit"]
        while pending:
            video = pending.popleft()
            outcome = self.fetch(video)
            row = outcome.row
            self.record(row)
            if outcome.verdict is not None and outcome.verdict.systemic:
                return self._stop(video.video_id, row["message"])
            status = row["status"]
            if status != S.RATE_LIMITED:
                rate_streak.clear()
            alive = status in ALIVE
            failure_streak = 0 if alive else failure_streak + 1
            window.append(not alive)
            if alive:
                self.watch.observe(alive=1, gone=len(gone_run))  # the run ended: its answers stand
                gone_run.clear()
                if status == S.OK:
                    format_streak.clear()
                continue
            if outcome.verdict is FORMAT_UNAVAILABLE:  # the verdict, warnings included, not the bare text
                format_streak.append(row)
                if len(format_streak) >= format_limit:
                    return self._stop_repeated(format_streak)
            if status in DOWNLOAD_PERMANENT or outcome.verdict is BLOCK_SYMPTOM:
                gone_run.append((video, row))
                if self.watch.implausible(len(gone_run)):
                    answer = self._ask_canary(video, self.watch.explain(len(gone_run)))
                    if answer is None or answer.ok:
                        self.watch.observe(gone=len(gone_run))
                        gone_run.clear()
                    else:
                        for judged, gone_row in gone_run:
                            self.record(blocked_row(gone_row, answer))
                        retry = [judged for judged, _ in gone_run]
                        gone_run.clear()
                        reason = (f"{len(retry)} 'gone' answers in a row were a block (canary {answer.video_id} "
                                  f"failed too)")
                        if not self._pause(reason):
                            return self._give_up(pending, S.BLOCKED, NOT_ATTEMPTED_BLOCKED)
                        pending.extendleft(reversed(retry))
                    failure_streak = 0
                    window.clear()
                    continue
            if status == S.RATE_LIMITED:
                rate_streak.append(video)
                if len(rate_streak) >= burst:
                    if not self._pause(f"{len(rate_streak)} rate-limit answers in a row"):
                        return self._give_up(pending, S.RATE_LIMITED, NOT_ATTEMPTED)
                    pending.extendleft(reversed(rate_streak))
                    rate_streak = []
                    failure_streak = 0
                    window.clear()
                    continue
            streak = self._failure_streak(failure_streak, window)
            if streak is None:
                continue
            failure_streak = 0
            window.clear()
            answer = self._ask_canary(video, streak)
            if answer is None or answer.ok:
                continue
            if answer.verdict == Verdict.BLOCK:
                if not self._pause(f"{streak}; canary {answer.video_id} is blocked too"):
                    return self._give_up(pending, S.BLOCKED, NOT_ATTEMPTED_BLOCKED)
                continue
            return self._stop(video.video_id, f"{streak}, and canary {answer.video_id} failed too "
                                              f"({answer.status}: {answer.message})")
        return 0

    def _failure_streak(self, in_a_row: int, window: collections.deque) -> str | None:
        """Why the failures so far ask for a canary, or None."""
        canary = self.settings["canary"]
        if in_a_row >= canary["failure_streak"]:
            return f"{in_a_row} failures in a row"
        if len(window) == window.maxlen and sum(window) / len(window) >= canary["failure_rate"]:
            return f"{sum(window)} failures in the last {len(window)} answers"
        return None

    def _ask_canary(self, video: Video, reason: str) -> CanaryAnswer | None:
        if self.canary is None or not self.canary.video_ids:
            if not self._warned_no_canary:
                log.warning("shard %s: %s, but no canary video is configured for this id kind "
                            "(download.canary.videos): the answers stand", self.shard_name, reason)
                self._warned_no_canary = True
            return None
        log.warning("shard %s: %s; asking a canary video", self.shard_name, reason)
        return self.canary.ask(video)

    def _pause(self, reason: str) -> bool:
        """Cool down once more, or say the shard has had its ``max_cooldowns``."""
        max_cooldowns = self.settings["max_cooldowns"]
        if self.cooldowns >= max_cooldowns:
            return False
        self.cooldowns += 1
        cooldown = self.settings["cooldown"]
        log.warning("shard %s: %s; pausing %g s (cooldown %d of %d), then retrying them",
                    self.shard_name, reason, cooldown, self.cooldowns, max_cooldowns)
        time.sleep(cooldown)
        return True

    def _give_up(self, pending: collections.deque, status: S, message: str) -> int:
        log.error("shard %s: still %s after %d cooldown(s); not contacting the server again. "
                  "%d more video(s) get %s rows for a later run.", self.shard_name,
                  "rate limited" if status == S.RATE_LIMITED else "blocked", self.cooldowns, len(pending), status)
        for rest in pending:
            self.record(self.stamp(make_row(rest.video_id, status, message, verdict=Verdict.BLOCK), 0))
        return 0

    def _stop(self, video_id: str, message: str) -> int:
        log.error("STOPPING shard %s: %s failed in a way that breaks every video (%s). Fix the cause "
                  "(update yt-dlp, install a JS runtime, free disk space, check cookies), then rerun; "
                  "finished videos are kept and every other video stays retryable.", self.shard_name, video_id,
                  message)
        return EXIT_SYSTEMIC

    def _stop_repeated(self, streak: list[dict]) -> int:
        """The same per-video error on many videos in a row is ours: rewrite their rows so a rerun retries them."""
        for row in streak:
            self.record({**row, "message": f"{REPEATED_SYSTEMIC} {len(streak)} videos in a row: {row['message']}"})
        return self._stop(streak[-1]["video_id"],
                          f"'Requested format is not available' on {len(streak)} videos in a row: no JavaScript "
                          "runtime (download.js_runtime, js_runtime_path), or download.format matches nothing")


def blocked_row(row: Mapping, answer: CanaryAnswer) -> dict:
    """``row``'s permanent answer, reclassified: the canary showed it was about us."""
    message = f"blocked: canary {answer.video_id} failed too ({answer.status}); answer was: {row['message']}"
    return {**row, "status": S.BLOCKED.value, "verdict": Verdict.BLOCK.value, "message": " ".join(message.split())}
