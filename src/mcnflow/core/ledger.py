"""Per-shard ledgers: one row per video per stage, the only place per-video outcomes live.

A stage appends each outcome to a *journal* (``<ledger>.journal``, flushed per row) while it works,
and writes the final ledger atomically when the shard is done. A killed job therefore leaves a
journal that the rerun reads to skip finished videos, and never a half-written ledger.

Status vocabularies are defined once, in mcnflow.core.status (docs/ledgers.md explains them).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from mcnflow.core.atomic import atomic_write
from mcnflow.core.status import (DOWNLOAD_PERMANENT, DOWNLOAD_RETRYABLE, DownloadStatus, FeatureStatus,  # noqa: F401
                                 NormalizeStatus, values)

# The status vocabularies live in mcnflow.core.status; these tuples are their ledger values.
# --- download -------------------------------------------------------------------------------
DOWNLOAD_STATUSES = values(DownloadStatus)
# attempts, first_attempt and last_attempt count every run's requests for the video (the retry budget);
# verdict is who the last answer was about (core.status.Verdict), ytdlp_version the yt-dlp that gave it.
DOWNLOAD_COLUMNS = ("video_id", "status", "message", "bytes", "duration", "path", "captions_path", "attempts",
                    "verdict", "first_attempt", "last_attempt", "ytdlp_version")

# --- normalize ------------------------------------------------------------------------------
NORMALIZE_STATUSES = values(NormalizeStatus)
NORMALIZE_COLUMNS = ("video_id", "status", "message", "has_audio", "duration", "width", "height", "fps", "path")

# --- features -------------------------------------------------------------------------------
FEATURE_STATUSES = values(FeatureStatus)
FEATURE_COLUMNS = ("video_id", "status", "message", "length")


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    # A message must stay on one TSV line.
    return str(value).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _row_line(row: Mapping, columns: Sequence[str]) -> str:
    return "\t".join(_fmt(row.get(c)) for c in columns) + "\n"


def write_ledger(path: str | Path, rows: Iterable[Mapping], columns: Sequence[str]) -> Path:
    """Write a complete ledger atomically (header + one row per video)."""
    with atomic_write(path) as handle:
        handle.write("\t".join(columns) + "\n")
        for row in rows:
            handle.write(_row_line(row, columns))
    return Path(path)


def read_ledger(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ledger as dicts of strings (empty cells are '')."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def ledger_by_id(path: str | Path) -> dict[str, dict[str, str]]:
    return {row["video_id"]: row for row in read_ledger(path)}


TORN_MARK = "\t#torn-by-killed-writer"


class Journal:
    """Append-only record of outcomes as they happen; the last row per video wins on reading."""

    def __init__(self, path: str | Path, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = tuple(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seal_torn_line()

    def _seal_torn_line(self) -> None:
        """End a line cut off by a killed writer, so the next append starts a row of its own."""
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    handle.write(TORN_MARK.encode() + b"\n")

    def read(self) -> dict[str, dict[str, str]]:
        """Complete rows written so far; a torn last line (killed mid-write) is ignored."""
        if not self.path.exists():
            return {}
        text = self.path.read_text(encoding="utf-8")
        lines = text.split("\n")
        if lines and lines[-1] != "":
            lines = lines[:-1]  # no trailing newline: the last line was cut off
        # A sealed torn line has too few cells and is skipped below.
        rows: dict[str, dict[str, str]] = {}
        for line in lines:
            if not line or line.endswith(TORN_MARK):
                continue
            cells = line.split("\t")
            if len(cells) != len(self.columns) or cells == list(self.columns):
                continue
            row = dict(zip(self.columns, cells))
            rows[row["video_id"]] = row
        return rows

    def append(self, row: Mapping) -> None:
        line = _row_line(row, self.columns)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def finish(self, ledger_path: str | Path, order: Sequence[str]) -> list[dict[str, str]]:
        """Write the final ledger (rows in ``order``) and drop the journal."""
        rows = self.read()
        missing = [vid for vid in order if vid not in rows]
        if missing:
            raise RuntimeError(f"journal {self.path} lacks outcomes for {len(missing)} video(s), e.g. {missing[:3]}")
        ordered = [rows[vid] for vid in order]
        write_ledger(ledger_path, ordered, self.columns)
        self.path.unlink(missing_ok=True)
        return ordered


def journal_path(ledger_path: str | Path) -> Path:
    ledger_path = Path(ledger_path)
    return ledger_path.with_name(ledger_path.name + ".journal")

