"""Tell a block from deletions: known-good canary videos, asked when a run of "gone" answers is implausible.

YouTube answers a blocked IP or account with texts that read like a verdict on the video
("Video unavailable. This content isn't available."). Each such answer alone is believable; forty
in a row on a corpus of which ~75 % survives is not (policy.py also asks after any long streak of
failures, whatever their kind). So the shard keeps its current *run* of
permanent answers (unavailable, private, removed, geo_blocked, login_required; an ok, skipped or
not-yet answer ends it) and, when the run gets implausible, asks a canary: a video configured as
known to be up (``download.canary.videos``, per id kind). If the canary fails too, the run was about
us: the policy (policy.py) reclassifies it as ``blocked`` and pauses the shard as for rate limits.
If it succeeds, the answers stand and a new run starts.

When is a run implausible (``download.canary.rule``)?

- ``improbable_run`` (default): with ``s`` the survival this shard has observed so far,
  ``(1 - s) ** run < threshold`` (and the run is at least 2 long). ``s`` starts at
  ``expected_survival`` (the corpus's survival as known beforehand) weighted as ``prior_weight``
  videos; every answer that stands (ok / skipped / not yet: alive; gone answers once their run is
  over or vouched for by a canary) refines it. At s = 0.75 and threshold 0.001 the canary is asked
  after 5 gone answers in a row.
- ``run_length``: ``run >= threshold`` (a plain count).

A canary is asked at the same place as the video that made the run implausible: the canary's id
replaces that video's id in its source URL (the corpus's ``url_template``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from mcnflow.core.status import DownloadStatus as S
from mcnflow.download.fetch import Attempt, Video

log = logging.getLogger(__name__)

MIN_RUN = 2  # one gone answer is never a run


class RunWatch:
    """The survival the shard has observed, and whether a run of gone answers fits it."""

    def __init__(self, canary_settings: Mapping, alive: int = 0, gone: int = 0):
        self.rule = canary_settings["rule"]
        self.threshold = float(canary_settings["threshold"])
        self.expected = float(canary_settings["expected_survival"])
        self.weight = float(canary_settings["prior_weight"])
        self.alive = alive
        self.gone = gone

    def observe(self, *, alive: int = 0, gone: int = 0) -> None:
        self.alive += alive
        self.gone += gone

    def survival(self) -> float:
        seen = self.alive + self.gone + self.weight
        return (self.alive + self.expected * self.weight) / seen if seen else self.expected

    def run_probability(self, run: int) -> float:
        """How likely ``run`` gone answers in a row are if every answer were about its video."""
        return (1.0 - self.survival()) ** run

    def implausible(self, run: int) -> bool:
        if self.rule == "run_length":
            return run >= self.threshold
        return run >= MIN_RUN and self.run_probability(run) < self.threshold

    def explain(self, run: int) -> str:
        if self.rule == "run_length":
            return f"{run} gone answers in a row (canary.rule run_length, threshold {self.threshold:g})"
        gone_share = 1.0 - self.survival()
        return (f"{run} gone answers in a row at an observed survival of {self.survival():.2f}: "
                f"{gone_share:.2f}^{run} = {self.run_probability(run):.2g} < {self.threshold:g}")


@dataclass(frozen=True)
class CanaryAnswer:
    ok: bool
    video_id: str
    status: str
    message: str
    verdict: str = ""   # who the canary's failure was about (Verdict): a block pauses, anything else stops


class Canary:
    """Ask the configured known-good videos, in order, until one answers."""

    def __init__(self, video_ids: Sequence[str], check: Callable[[str, str], Attempt]):
        self.video_ids = list(video_ids)
        self.check = check   # (canary id, url) -> Attempt (Fetcher.check)
        self.asked = 0

    def url_for(self, canary_id: str, judged: Video) -> str | None:
        if not judged.video_id or judged.video_id not in judged.source:
            return None
        return judged.source.replace(judged.video_id, canary_id)

    def ask(self, judged: Video) -> CanaryAnswer | None:
        """ok: some canary answered, so the server serves us. None: no canary can be asked."""
        answer = None
        for canary_id in self.video_ids:
            url = self.url_for(canary_id, judged)
            if url is None:
                log.warning("canary: %s's source %s does not contain its id; cannot place canary %s there",
                            judged.video_id, judged.source, canary_id)
                return None
            self.asked += 1
            result = self.check(canary_id, url)
            if not result.failed:
                log.warning("canary %s answered (%s): the gone answers stand", canary_id, url)
                return CanaryAnswer(True, canary_id, S.OK.value, "")
            answer = CanaryAnswer(False, canary_id, str(result.verdict.status), result.message,
                                  str(result.verdict.verdict))
            log.warning("canary %s failed too (%s): %s", canary_id, answer.status, _short(result.message))
        return answer


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def required_run(canary_settings: Mapping, survival: float) -> int:
    """The shortest implausible run at ``survival`` (for the log line at the start of a shard)."""
    if canary_settings["rule"] == "run_length":
        return int(canary_settings["threshold"])
    gone_share = 1.0 - survival
    if gone_share <= 0.0:
        return MIN_RUN
    if gone_share >= 1.0:
        return 0  # never implausible
    return max(MIN_RUN, math.floor(math.log(float(canary_settings["threshold"])) / math.log(gone_share)) + 1)
