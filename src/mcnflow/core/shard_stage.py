"""One stage over one shard, the same way for every per-shard stage (download, normalize, extract).

The life of a shard job:

1. ``ShardRun(ledger, columns, outputs=...)`` removes this shard's own leftovers of a killed run
   (``.tmp-<name>.*`` siblings of its ledger and outputs, and unfinished files in its work
   directory; never another shard's, which may be running next to it in the same directory) and
   opens the journal ``<ledger>.journal``.
2. ``run.settled(video_id)`` returns the journal row an earlier (killed) run left when the stage's
   ``trust`` callback accepts it, so the rerun skips work that is already done.
3. ``run.record(row)`` appends each outcome to the journal as soon as it is known (fsync per row).
4. ``run.finish(order)`` writes the final ledger atomically (rows in manifest order) and removes
   the journal and the shard's work directory.

Stages whose output is one file per shard (the HDF5 feature shards) keep each finished video's
result in the shard's work directory (:meth:`ShardRun.part_path`, written atomically), so a killed
job resumes from the videos it finished instead of starting over. Such a stage passes a
``fingerprint`` of everything its results depend on (settings, inputs): a rerun whose fingerprint
differs discards the earlier journal and work directory instead of mixing results of two recipes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from mcnflow.core.atomic import TMP_PREFIX, atomic_write
from mcnflow.core.ids import is_valid_video_id
from mcnflow.core.ledger import Journal, journal_path, ledger_by_id

log = logging.getLogger(__name__)

Row = Mapping[str, str]
Trust = Callable[[str, Row], bool]

FINGERPRINT_FILE = ".fingerprint"  # in the work directory; video ids never start with a dot


def _remove(path: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    return False


def remove_own_temps(finals: Iterable[str | Path]) -> int:
    """Delete ``.tmp-<name>.*`` leftovers of the given final paths (files or directories).

    Only temporaries of exactly these names go: ``.tmp-shard-00001.h5.x`` survives the cleanup of
    ``shard-00000.h5`` (another job may be writing it right now). Each directory is listed once, so
    a shard with thousands of outputs in one directory stays cheap.
    """
    names_by_dir: dict[Path, set[str]] = defaultdict(set)
    for final in finals:
        final = Path(final)
        names_by_dir[final.parent].add(final.name)
    removed = 0
    for directory, names in names_by_dir.items():
        try:
            entries = [entry.name for entry in os.scandir(directory)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if not entry.startswith(TMP_PREFIX):
                continue
            rest = entry[len(TMP_PREFIX):]
            # ``.tmp-<name>.<anything>``: some dot in ``rest`` must end one of the names
            owned = any(rest[:i] in names for i, char in enumerate(rest) if char == ".")
            if owned and _remove(directory / entry):
                removed += 1
    return removed


def work_dir_for(ledger: str | Path) -> Path:
    """The shard's own scratch directory (kept across a killed run, removed by ``finish``)."""
    ledger = Path(ledger)
    return ledger.with_name(ledger.name + ".parts")


def _remove_work_temps(work_dir: Path) -> int:
    """Unfinished files in the shard's work directory (it is this shard's alone: all of them go)."""
    if not work_dir.is_dir():
        return 0
    return sum(_remove(path) for path in list(work_dir.glob(f"{TMP_PREFIX}*")))


class ShardRun:
    """Journal, resume and finish one shard of one stage (see the module docstring)."""

    def __init__(self, ledger: str | Path, columns: Sequence[str], *, outputs: Iterable[str | Path] = (),
                 trust: Trust | None = None, include_ledger: bool = False, fingerprint: str | None = None):
        self.ledger = Path(ledger)
        self.columns = tuple(columns)
        self.outputs = [Path(p) for p in outputs]
        self.work_dir = work_dir_for(self.ledger)
        removed = remove_own_temps([self.ledger, *self.outputs]) + _remove_work_temps(self.work_dir)
        if removed:
            log.info("removed %d temporary file(s) of a killed run of this shard", removed)
        self.fingerprint = fingerprint
        if fingerprint is not None:
            self._check_fingerprint(fingerprint)
        self.journal = Journal(journal_path(self.ledger), self.columns)
        self._trust = trust or (lambda video_id, row: True)
        # include_ledger: a forced rerun over a finished shard (Snakemake update()) starts from its
        # final ledger too; the journal, being newer, wins.
        earlier: dict[str, dict[str, str]] = {}
        if include_ledger and self.ledger.exists():
            earlier.update(ledger_by_id(self.ledger))
        earlier.update(self.journal.read())
        self.earlier = earlier
        self.resumed = 0
        self._verdicts: dict[str, dict[str, str] | None] = {}
        # this run's outcome per video: settled earlier rows and recorded rows (last one wins)
        self.rows: dict[str, dict] = {}

    def _check_fingerprint(self, fingerprint: str) -> None:
        """Discard an earlier run's journal and parts when they were made another way."""
        marker = self.work_dir / FINGERPRINT_FILE
        try:
            earlier = marker.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            earlier = None
        if earlier == fingerprint:
            return
        journal = journal_path(self.ledger)
        if journal.exists() or self.work_dir.exists():
            log.info("%s: the earlier run used other settings or inputs; its journal and parts are discarded",
                     self.ledger)
        journal.unlink(missing_ok=True)
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(marker) as handle:
            handle.write(fingerprint + "\n")

    def settled(self, video_id: str) -> dict[str, str] | None:
        """The earlier row of ``video_id`` if the stage trusts it (then the video is not redone)."""
        if video_id in self._verdicts:  # asked before: trust is checked (and counted) once
            verdict = self._verdicts[video_id]
            return None if verdict is None else dict(verdict)
        row = self.earlier.get(video_id)
        verdict = row if row is not None and self._trust(video_id, row) else None
        self._verdicts[video_id] = verdict
        if verdict is None:
            return None
        self.resumed += 1
        self.rows[video_id] = dict(verdict)
        return dict(verdict)

    def record(self, row: Mapping) -> None:
        self.journal.append(row)
        self.rows[str(row["video_id"])] = dict(row)

    def part_path(self, video_id: str, suffix: str = ".npz") -> Path:
        """Where this shard keeps one finished video's result until the shard is assembled.

        An id that is not safe as a file name (not a YouTube or local id) gets a hashed name, so a
        part never lands outside the work directory.
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if is_valid_video_id(video_id, "youtube") or is_valid_video_id(video_id, "local"):
            stem = video_id
        else:
            stem = "%" + hashlib.sha256(video_id.encode("utf-8")).hexdigest()[:32]
        return self.work_dir / f"{stem}{suffix}"

    def finish(self, order: Sequence[str]) -> list[dict[str, str]]:
        """Write the ledger atomically (rows in ``order``), then drop the journal and work directory."""
        if self.resumed:
            log.info("kept %d outcome(s) from an earlier run of this shard", self.resumed)
        rows = self.journal.finish(self.ledger, order)
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        return rows
