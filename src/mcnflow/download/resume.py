"""Resume a shard: which earlier outcomes are settled, what killed runs left behind, the journal.

The shard's journal and final ledger are kept by :class:`mcnflow.core.shard_stage.ShardRun` with
``include_ledger=True``: the download rule declares its ledger Snakemake ``update()``, so a forced
rerun (``snakemake --forcerun download_shard``) still sees the finished ledger and retries only its
retryable rows. An earlier row is *settled* (kept, the video not asked again) when it is

- ``ok`` and its file is still on disk with the recorded size;
- gone (unavailable / private / removed / geo_blocked / login_required) with the stored verdict
  ``video``: the answer named the video. The verdict was decided when the answer came (with the
  exception type and yt-dlp's warnings, which a message alone no longer has) and is read, not
  re-derived; a row from before verdicts were stored is judged by today's table of answers;
- ``skipped`` (filtered out on purpose) or ``given_up`` (its retry budget is spent).

Every other row is asked again: rate limited, blocked, transient, not yet, error, and videos without
a row. ``RetryRequest`` (``mcnflow download --retry STATUS[,STATUS]``, config ``download.retry``)
unsettles rows in the named statuses too, by default only those recorded under an older yt-dlp than
the one running: after an upgrade, ``--retry error,given_up`` asks exactly the videos the old version
failed on. A complete ``<id>.mp4`` found without a row (the ledger was lost) is taken as it is: only
complete files ever get that name. Leftovers of a killed run in the videos directory (``.tmp-<id>*``,
``<id>*.part``) are deleted at the start, never resumed: only this shard's, since other shards' jobs
may be writing into the same directory right now.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from tqdm import tqdm

from mcnflow.core.atomic import TMP_PREFIX
from mcnflow.core.ids import InvalidVideoId, validate_video_id
from mcnflow.core.ledger import DOWNLOAD_COLUMNS
from mcnflow.core.shard_stage import ShardRun
from mcnflow.core.status import DOWNLOAD_PERMANENT, DownloadStatus as S, Verdict
from mcnflow.download.classify import classify_message
from mcnflow.download.fetch import YTDLP_VERSION, Video, is_url, local_row, make_row, probe_duration, version_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryRequest:
    """Settled rows to ask again: those in ``statuses``, recorded under an older yt-dlp unless ``any_version``."""
    statuses: frozenset[str] = frozenset()
    any_version: bool = False

    def wants(self, row: Mapping[str, str]) -> bool:
        if row.get("status") not in self.statuses:
            return False
        return self.any_version or version_key(row.get("ytdlp_version")) < version_key(YTDLP_VERSION)


def file_intact(row: Mapping[str, str]) -> bool:
    """An ``ok`` row still describes the file on disk (present, with the recorded size)."""
    try:
        return os.path.getsize(row["path"]) == int(row["bytes"])
    except (OSError, ValueError, TypeError, KeyError):
        return False


def names_the_video(row: Mapping[str, str]) -> bool:
    """The stored verdict says the answer was about the video (older rows: today's table decides)."""
    verdict = row.get("verdict")
    if verdict:
        return verdict == Verdict.VIDEO
    return classify_message(row.get("message", "")).verdict == Verdict.VIDEO


def is_settled(row: Mapping[str, str], retry: RetryRequest = RetryRequest()) -> bool:
    """A rerun keeps this row instead of trying the video again."""
    status = row.get("status")
    if retry.wants(row):
        return False
    if status == S.OK:
        return file_intact(row)
    if status in DOWNLOAD_PERMANENT:
        return names_the_video(row)
    return status in (S.SKIPPED, S.GIVEN_UP)  # anything else, or a status this version does not know: retry


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


def found_complete(settings: Mapping, videos_dir: Path, video: Video) -> dict | None:
    """A complete ``<id>.<ext>`` without a ledger row (ledger lost): take it instead of downloading."""
    final = videos_dir / f"{video.video_id}.{settings['merge_output_format']}"
    if not final.is_file() or final.stat().st_size == 0:
        return None
    captions = [videos_dir / f"{video.video_id}.{lang}.vtt" for lang in settings["caption_languages"]]
    captions_path = next((c for c in captions if c.is_file()), None)
    return make_row(video.video_id, S.OK, "complete file from an earlier run", size=final.stat().st_size,
                    duration=probe_duration(final), path=final, captions_path=captions_path)


class ShardJournal:
    """The shard's ShardRun, with a log line and a progress step per video."""

    def __init__(self, ledger: Path, total: int, shard_name: str, retry: RetryRequest = RetryRequest()):
        self.run = ShardRun(ledger, DOWNLOAD_COLUMNS, trust=lambda video_id, row: is_settled(row, retry),
                            include_ledger=True)
        self._journaled = self.run.journal.read()  # what a killed run already journaled
        self._counted: set[str] = set()
        self.progress = tqdm(total=total, desc=f"download shard {shard_name}", unit="video", file=sys.stderr)

    def _step(self, video_id: str) -> None:
        if video_id not in self._counted:
            self._counted.add(video_id)
            self.progress.update(1)

    def record(self, row: Mapping) -> None:
        self.run.record(row)
        status = row["status"]
        level = logging.INFO if status in (S.OK, *DOWNLOAD_PERMANENT, S.SKIPPED) else logging.WARNING
        detail = row["message"] or (f"{row['bytes']} bytes, {row['duration'] or '?'} s" if status == S.OK else "")
        log.log(level, "%s: %s%s", row["video_id"], status, f" ({detail})" if detail else "")
        self._step(str(row["video_id"]))

    def carry(self, row: Mapping[str, str]) -> None:
        """Keep a settled earlier row (journaled again only when it came from the final ledger)."""
        if self._journaled.get(row["video_id"]) != row:
            self.run.record(row)
        self._step(row["video_id"])

    def finish(self, order: list[str]) -> list[dict[str, str]]:
        self.progress.close()
        return self.run.finish(order)

    def close(self) -> None:
        self.progress.close()


def settle_known(videos: list[Video], journal: ShardJournal, *, id_kind: str, settings: Mapping,
                 videos_dir: Path) -> tuple[list[Video], list[dict]]:
    """Record every outcome known without asking the server.

    Returns the videos left to download, and the earlier rows kept (what this shard already knows
    about its survival).
    """
    valid: list[Video] = []
    for video in videos:
        try:
            validate_video_id(video.video_id, id_kind)
        except InvalidVideoId as exc:
            journal.record(make_row(video.video_id, S.ERROR, str(exc), verdict=Verdict.INPUT))
            continue
        valid.append(video)
    removed = remove_leftovers(videos_dir, [v.video_id for v in valid])
    if removed:
        log.info("removed %d leftover partial file(s) of an earlier run", removed)

    to_fetch: list[Video] = []
    kept: list[dict] = []
    for video in valid:
        if not video.source:
            journal.record(make_row(video.video_id, S.ERROR, "the manifest gives no source", verdict=Verdict.INPUT))
        elif not is_url(video.source):
            journal.record(local_row(video))
        elif (row := journal.run.settled(video.video_id)) is not None:
            journal.carry(row)
            kept.append(row)
        elif (earlier := journal.run.earlier.get(video.video_id)) is not None and earlier["status"] == S.OK:
            to_fetch.append(video)  # an ok row whose file changed on disk: download it again
        elif found := found_complete(settings, videos_dir, video):
            journal.record(found)
        else:
            to_fetch.append(video)
    if kept:
        log.info("%d video(s) already settled by an earlier run", len(kept))
    return to_fetch, kept
