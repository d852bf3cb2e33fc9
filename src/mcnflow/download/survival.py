"""``mcnflow survival``: how many of a corpus's videos could be downloaded, and why the others not.

    mcnflow survival --ledgers results/download/howto100m/shard-*.tsv --corpus howto100m \\
        --output results/download/howto100m/survival.tsv

Reads the shards' download ledgers and writes one row per status (every status of
DownloadStatus, zeros included), then ``total`` and ``survival`` (the ``ok`` share):

    corpus  status  outcome  videos  percent  never_tried

``outcome`` says what the status means for the corpus (DownloadOutcome): ``survived``, ``gone``
(the status says which way: unavailable, private, removed, geo_blocked, login_required),
``blocked`` (the answer was about us: rate limited, or gone answers a failed canary showed to be a
block), ``not_yet`` (upcoming live streams and premieres), ``failed``, ``given_up`` (retried until the
attempt budget ran out; never counted as gone) and ``skipped``.
``never_tried`` counts the videos of a row the job never asked the server about (it stopped
contacting it after its cool-downs). Videos still blocked, rate limited, transient or not yet may
download in a later run, so while there are any the survival figure is a lower bound (the printed
summary says so, and reports a block).
"""

from __future__ import annotations

import argparse
import collections
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mcnflow.core.ledger import read_ledger, write_ledger
from mcnflow.core.status import (DOWNLOAD_OUTCOMES, DOWNLOAD_PERMANENT, DOWNLOAD_RETRYABLE, DownloadOutcome,
                                 DownloadStatus, values)

log = logging.getLogger(__name__)

SURVIVAL_COLUMNS = ("corpus", "status", "outcome", "videos", "percent", "never_tried")
DOWNLOAD_STATUSES = values(DownloadStatus)


class LedgerError(ValueError):
    """A ledger has an unknown status, or lists a video another ledger lists too."""


@dataclass
class Tally:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    never_tried: collections.Counter = field(default_factory=collections.Counter)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


def _never_tried(status: str, attempts: str | None) -> bool:
    """A retryable row of a video the job never asked the server about."""
    return status in DOWNLOAD_RETRYABLE and (attempts or "0").strip() in ("0", "")


def count_statuses(ledgers: Iterable[str | Path]) -> Tally:
    """Videos per status over all ``ledgers`` (each video counted once)."""
    tally = Tally()
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
            tally.statuses[status] += 1
            if _never_tried(status, row.get("attempts")):
                tally.never_tried[status] += 1
    return tally


def _percent(part: int, total: int) -> float | None:
    return round(100.0 * part / total, 2) if total else None  # undefined for an empty corpus


def survival_rows(corpus: str, tally: Tally) -> list[dict]:
    total = tally.total
    rows = [{"corpus": corpus, "status": status, "outcome": DOWNLOAD_OUTCOMES[DownloadStatus(status)].value,
             "videos": tally.statuses[status], "percent": _percent(tally.statuses[status], total),
             "never_tried": tally.never_tried[status]}
            for status in DOWNLOAD_STATUSES]
    rows.append({"corpus": corpus, "status": "total", "outcome": "all", "videos": total,
                 "percent": _percent(total, total), "never_tried": sum(tally.never_tried.values())})
    rows.append({"corpus": corpus, "status": "survival", "outcome": DownloadOutcome.SURVIVED.value,
                 "videos": tally.statuses[DownloadStatus.OK], "percent": _percent(tally.statuses[DownloadStatus.OK], total),
                 "never_tried": 0})
    return rows


def format_table(rows: Sequence[dict]) -> str:
    width = max(len(r["status"]) for r in rows)
    lines = [f"{r['status']:<{width}}  {r['videos']:>9}  "
             + ("      -" if r["percent"] is None else f"{r['percent']:6.2f}%") for r in rows]
    return "\n".join(lines)


def outcome_lines(tally: Tally) -> list[str]:
    """One line per outcome (they add up to the corpus): gone with its kinds, blocked, not yet, never tried..."""
    total = tally.total
    tried: dict[DownloadOutcome, dict[str, int]] = collections.defaultdict(dict)
    for status in DOWNLOAD_STATUSES:
        outcome = DOWNLOAD_OUTCOMES[DownloadStatus(status)]
        tried[outcome][status] = tally.statuses[status] - tally.never_tried[status]
    tried[DownloadOutcome.NEVER_TRIED] = {status: tally.never_tried[status] for status in DOWNLOAD_STATUSES}
    lines = []
    for outcome in DownloadOutcome:
        parts = tried[outcome]
        count = sum(parts.values())
        shown = [f"{status} {n}" for status, n in parts.items() if n]
        detail = ", ".join(shown) if len(parts) > 1 and shown else ""
        percent = _percent(count, total)
        lines.append(f"{outcome.value:<12} {count:>9}  " + ("      -" if percent is None else f"{percent:6.2f}%")
                     + (f"  ({detail})" if detail else ""))
    return lines


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledgers", nargs="+", required=True, metavar="TSV", help="the corpus's download ledgers")
    parser.add_argument("--corpus", required=True, help="corpus name (a column of the output)")
    parser.add_argument("--output", required=True, help="survival table to write (TSV)")


def main(args: argparse.Namespace) -> int:
    try:
        tally = count_statuses(args.ledgers)
    except (LedgerError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    rows = survival_rows(args.corpus, tally)
    write_ledger(args.output, rows, SURVIVAL_COLUMNS)
    total = tally.total
    print(f"download survival of {args.corpus} ({len(args.ledgers)} ledger(s)):")
    print(format_table(rows))
    print("by outcome:")
    print("\n".join(outcome_lines(tally)))
    blocked = tally.statuses[DownloadStatus.BLOCKED]
    if blocked:
        untried = tally.never_tried[DownloadStatus.BLOCKED]
        print(f"BLOCK: {blocked} video(s) blocked: {blocked - untried} answered as gone while a known-good canary "
              f"video failed too (the server was refusing us, IP / account, not reporting deletions), {untried} "
              f"never tried after that. Check cookies, proxy and sleeps; a later run retries them.")
    retryable = sum(tally.statuses[s] for s in DOWNLOAD_RETRYABLE)
    if retryable:
        print(f"{retryable} of {total} video(s) are {' / '.join(DOWNLOAD_RETRYABLE)} and may still download in a "
              f"later run (snakemake --forcerun download_shard): survival is a lower bound.")
    given_up = tally.statuses[DownloadStatus.GIVEN_UP]
    if given_up:
        print(f"{given_up} video(s) given up: their retry budget (download.retry_budget) is spent, but no answer said "
              f"they are gone. `mcnflow download --retry given_up` asks again (e.g. after a yt-dlp upgrade).")
    gone = sum(tally.statuses[s] for s in DOWNLOAD_PERMANENT)
    log.info("%s: %d of %d survived, %d gone, %d blocked or rate limited, %d never tried", args.corpus,
             tally.statuses[DownloadStatus.OK], total, gone,
             blocked + tally.statuses[DownloadStatus.RATE_LIMITED], sum(tally.never_tried.values()))
    sys.stdout.flush()
    return 0
