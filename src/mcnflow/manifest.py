"""``mcnflow manifest``: a corpus's video list with its shard and source, the start of the data flow.

Output TSV columns: ``video_id``, ``shard`` (5 digits), ``source`` (a URL or a local path). Ids that
fail validation never reach a path or a command: they go to ``<output>.rejected.tsv`` with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging

from mcnflow.core.atomic import atomic_write
from mcnflow.corpora import open_corpus
from mcnflow.core.shards import shard_name, shard_of

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("video_id", "shard", "source")


def build_manifest(corpus, shard_size: int) -> list[dict[str, str]]:
    return [{"video_id": vid, "shard": shard_name(shard_of(i, shard_size)), "source": corpus.source(vid)}
            for i, vid in enumerate(corpus.video_ids())]


def read_manifest(path: str, shard: str | int | None = None) -> list[dict[str, str]]:
    """Manifest rows, optionally only those of one shard."""
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if tuple(header) != MANIFEST_COLUMNS:
            raise ValueError(f"{path}: header {header}; expected {MANIFEST_COLUMNS}")
        rows = [dict(zip(MANIFEST_COLUMNS, line.rstrip("\n").split("\t"))) for line in handle if line.strip()]
    if shard is not None:
        rows = [row for row in rows if int(row["shard"]) == int(shard)]
    return rows


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="corpus name (a key of config corpora)")
    parser.add_argument("--corpus-spec", required=True, help="the corpus's config entry as JSON")
    parser.add_argument("--shard-size", type=int, required=True)
    parser.add_argument("--output", required=True, help="results/manifest/<corpus>.tsv")


def main(args: argparse.Namespace) -> int:
    corpus = open_corpus(args.corpus, json.loads(args.corpus_spec))
    rows = build_manifest(corpus, args.shard_size)
    with atomic_write(args.output) as handle:
        handle.write("\t".join(MANIFEST_COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(row[c] for c in MANIFEST_COLUMNS) + "\n")
    with atomic_write(args.output + ".rejected.tsv") as handle:
        handle.write("video_id\treason\n")
        for raw, reason in corpus.rejected:
            handle.write(f"{raw!r}\t{reason}\n")
    n_shards = len({row["shard"] for row in rows})
    log.info("%s: %d videos in %d shard(s); %d invalid id(s) rejected", args.corpus, len(rows), n_shards,
             len(corpus.rejected))
    return 0
