"""``mcnflow feature-stats``: per corpus and modality, how many videos have features and how much.

    mcnflow feature-stats --corpus youcook2 --ledgers results/features/youcook2/*/shard-*.tsv \\
        --output results/features/youcook2/stats.tsv

One row per (stream, status) with the number of videos and the stored length (the stream's
``length_unit``: seconds of 1 fps frames, 3D clips, log-mel frames, captions; mcnflow.core.streams),
read from the feature ledgers. The stream (column ``modality``) is the ledger's folder name and must
be a stream of the table.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from mcnflow.core.ledger import FEATURE_STATUSES, read_ledger, write_ledger
from mcnflow.core.streams import stream

STATS_COLUMNS = ("corpus", "modality", "status", "videos", "length")


def feature_stats(corpus: str, ledgers: list[str]) -> list[dict]:
    videos: collections.Counter = collections.Counter()
    length: collections.Counter = collections.Counter()
    modalities: list[str] = []
    for ledger in ledgers:
        modality = stream(Path(ledger).parent.name).name  # an unknown folder is an error naming the streams
        if modality not in modalities:
            modalities.append(modality)
        for row in read_ledger(ledger):
            if row["status"] not in FEATURE_STATUSES:
                raise ValueError(f"{ledger}: unknown status {row['status']!r} for {row['video_id']!r}; "
                                 f"allowed: {', '.join(FEATURE_STATUSES)}")
            videos[modality, row["status"]] += 1
            length[modality, row["status"]] += int(row["length"] or 0)
    return [{"corpus": corpus, "modality": m, "status": s, "videos": videos[m, s], "length": length[m, s]}
            for m in modalities for s in FEATURE_STATUSES if videos[m, s] or s == "ok"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--ledgers", nargs="+", required=True, metavar="TSV",
                        help="feature ledgers, results/features/<corpus>/<modality>/shard-*.tsv")
    parser.add_argument("--output", required=True)


def main(args: argparse.Namespace) -> int:
    rows = feature_stats(args.corpus, args.ledgers)
    write_ledger(args.output, rows, STATS_COLUMNS)
    for row in rows:
        print(f"{row['modality']:<8} {row['status']:<12} {row['videos']:>8} videos {row['length']:>10} "
              f"{stream(row['modality']).length_unit}")
    return 0
