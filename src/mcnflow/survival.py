"""``mcnflow survival``: how many of a corpus's videos could be downloaded, and why the others not.

    mcnflow survival --ledgers results/download/howto100m/shard-*.tsv --corpus howto100m \\
        --output results/download/howto100m/survival.tsv

Reads the shards' download ledgers and writes one row per status (every status of
ledger.DOWNLOAD_STATUSES, zeros included), then ``total`` and ``survival`` (the ``ok`` share):

    corpus  status  videos  percent

Videos still ``rate_limited`` or ``transient`` may download in a later run, so while there are
any the survival figure is a lower bound (the printed summary says so).
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
from pathlib import Path
from typing import Iterable, Sequence

from mcnflow.core.ledger import DOWNLOAD_OK, DOWNLOAD_RETRYABLE, DOWNLOAD_STATUSES, read_ledger, write_ledger

log = logging.getLogger(__name__)

SURVIVAL_COLUMNS = ("corpus", "status", "videos", "percent")


class LedgerError(ValueError):
    """A ledger has an unknown status, or lists a video another ledger lists too."""


def count_statuses(ledgers: Iterable[str | Path]) -> collections.Counter:
    """Videos per status over all ``ledgers`` (each video counted once)."""
    counts: collections.Counter = collections.Counter()
    seen: dict[str, str] = {}
    for ledger in ledgers:
        for line, row in enumerate(read_ledger(ledger), start=2):
            status, video_id = row.get("status"), row.get("video_id")
            if status not in DOWNLOAD_STATUSES:
                raise LedgerError(f"{ledger} line {line}: unknown status {status!r} for {video_id!r}; "
                                  f"allowed: {', '.join(DOWNLOAD_STATUSES)}")
            if video_id in seen:
                raise LedgerError(f"{ledger} line {line}: {video_id!r} is also in {seen[video_id]} (shards overlap)")
            seen[video_id] = str(ledger)
            counts[status] += 1
    return counts


def _percent(part: int, total: int) -> float | None:
    return round(100.0 * part / total, 2) if total else None  # undefined for an empty corpus


def survival_rows(corpus: str, counts: collections.Counter) -> list[dict]:
    total = sum(counts.values())
    rows = [{"corpus": corpus, "status": status, "videos": counts[status], "percent": _percent(counts[status], total)}
            for status in DOWNLOAD_STATUSES]
    rows.append({"corpus": corpus, "status": "total", "videos": total, "percent": _percent(total, total)})
    rows.append({"corpus": corpus, "status": "survival", "videos": counts[DOWNLOAD_OK],
                 "percent": _percent(counts[DOWNLOAD_OK], total)})
    return rows


def format_table(rows: Sequence[dict]) -> str:
    width = max(len(r["status"]) for r in rows)
    lines = [f"{r['status']:<{width}}  {r['videos']:>9}  "
             + ("      -" if r["percent"] is None else f"{r['percent']:6.2f}%") for r in rows]
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledgers", nargs="+", required=True, metavar="TSV", help="the corpus's download ledgers")
    parser.add_argument("--corpus", required=True, help="corpus name (a column of the output)")
    parser.add_argument("--output", required=True, help="survival table to write (TSV)")


def main(args: argparse.Namespace) -> int:
    try:
        counts = count_statuses(args.ledgers)
    except (LedgerError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    rows = survival_rows(args.corpus, counts)
    write_ledger(args.output, rows, SURVIVAL_COLUMNS)
    total = sum(counts.values())
    print(f"download survival of {args.corpus} ({len(args.ledgers)} ledger(s)):")
    print(format_table(rows))
    retryable = sum(counts[s] for s in DOWNLOAD_RETRYABLE)
    if retryable:
        print(f"{retryable} of {total} video(s) are {' / '.join(DOWNLOAD_RETRYABLE)} and may still download in a "
              f"later run (snakemake --forcerun download_shard): survival is a lower bound.")
    sys.stdout.flush()
    return 0
