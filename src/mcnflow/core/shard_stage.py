"""One stage over one shard, the same way for every per-shard stage (download, normalize, extract).

The life of a shard job:

1. ``ShardRun(ledger, columns, outputs=...)`` removes this shard's own leftovers of a killed run
   (``.tmp-<name>.*`` siblings of its ledger and outputs; never another shard's, which may be
   running next to it in the same directory) and opens the journal ``<ledger>.journal``.
2. ``run.settled(video_id)`` returns the journal row an earlier (killed) run left when the stage's
   ``trust`` callback accepts it, so the rerun skips work that is already done.
3. ``run.record(row)`` appends each outcome to the journal as soon as it is known (fsync per row).
4. ``run.finish(order)`` writes the final ledger atomically (rows in manifest order) and removes
   the journal and the shard's work directory.

Stages whose output is one file per shard (the HDF5 feature shards) keep each finished video's
result in the shard's work directory (:meth:`ShardRun.part_path`, written atomically), so a killed
job resumes from the videos it finished instead of starting over.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from mcnflow.core.atomic import TMP_PREFIX
from mcnflow.core.ledger import Journal, journal_path, ledger_by_id

log = logging.getLogger(__name__)

Row = Mapping[str, str]
Trust = Callable[[str, Row], bool]


def remove_own_temps(finals: Iterable[str | Path]) -> int:
    """Delete ``.tmp-<name>.*`` leftovers of the given final paths (files or directories)."""
    removed = 0
    for final in finals:
        final = Path(final)
        if not final.parent.is_dir():
            continue
        for stale in final.parent.glob(f"{TMP_PREFIX}{final.name}.*"):
            with contextlib.suppress(FileNotFoundError):
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
                removed += 1
    return removed


def work_dir_for(ledger: str | Path) -> Path:
    """The shard's own scratch directory (kept across a killed run, removed by ``finish``)."""
    ledger = Path(ledger)
    return ledger.with_name(ledger.name + ".parts")


class ShardRun:
    """Journal, resume and finish one shard of one stage (see the module docstring)."""

    def __init__(self, ledger: str | Path, columns: Sequence[str], *, outputs: Iterable[str | Path] = (),
                 trust: Trust | None = None, include_ledger: bool = False):
        self.ledger = Path(ledger)
        self.columns = tuple(columns)
        self.outputs = [Path(p) for p in outputs]
        removed = remove_own_temps([self.ledger, *self.outputs])
        if removed:
            log.info("removed %d temporary file(s) of a killed run of this shard", removed)
        self.journal = Journal(journal_path(self.ledger), self.columns)
        self.work_dir = work_dir_for(self.ledger)
        self._trust = trust or (lambda video_id, row: True)
        # include_ledger: a forced rerun over a finished shard (Snakemake update()) starts from its
        # final ledger too; the journal, being newer, wins.
        earlier: dict[str, dict[str, str]] = {}
        if include_ledger and self.ledger.exists():
            earlier.update(ledger_by_id(self.ledger))
        earlier.update(self.journal.read())
        self.earlier = earlier
        self.resumed = 0

    def settled(self, video_id: str) -> dict[str, str] | None:
        """The earlier row of ``video_id`` if the stage trusts it (then the video is not redone)."""
        row = self.earlier.get(video_id)
        if row is None or not self._trust(video_id, row):
            return None
        self.resumed += 1
        return dict(row)

    def record(self, row: Mapping) -> None:
        self.journal.append(row)

    def part_path(self, video_id: str, suffix: str = ".npz") -> Path:
        """Where this shard keeps one finished video's result until the shard is assembled."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir / f"{video_id}{suffix}"

    def finish(self, order: Sequence[str]) -> list[dict[str, str]]:
        """Write the ledger atomically (rows in ``order``), then drop the journal and work directory."""
        if self.resumed:
            log.info("kept %d outcome(s) from an earlier run of this shard", self.resumed)
        rows = self.journal.finish(self.ledger, order)
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        return rows

