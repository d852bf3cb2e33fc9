"""``mcnflow manifest``: a corpus's video list with its shard and source, the start of the data flow.

Output TSV columns: ``video_id``, ``shard`` (5 digits), ``source`` (a URL or a local path). Ids that
fail validation never reach a path or a command: they go to ``<output>.rejected.tsv`` with the reason.
"""

from __future__ import annotations

import argparse
import logging
from typing import Iterable

from mcnflow.core.atomic import atomic_write
from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args
from mcnflow.corpora import open_corpus
from mcnflow.core.shards import shard_name, shard_of

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("video_id", "shard", "source")


def build_manifest(corpus, shard_size: int) -> list[dict[str, str]]:
    return [{"video_id": vid, "shard": shard_name(shard_of(i, shard_size)), "source": corpus.source(vid)}
            for i, vid in enumerate(corpus.video_ids())]


class ManifestError(ValueError):
    """The manifest has a bad header or a bad shard cell; the message names the file and line."""


def shard_rows(rows: Iterable[tuple[int, dict[str, str]]], shard: str | int, path: str = "manifest"
               ) -> list[dict[str, str]]:
    """The rows of one shard ("00003" and 3 name the same shard); ``rows`` are ``(line, row)`` pairs."""
    wanted = int(shard)
    kept = []
    for line, row in rows:
        try:
            row_shard = int(row.get("shard") or "")
        except ValueError:
            raise ManifestError(f"{path} line {line}: shard {row.get('shard')!r} is not a number") from None
        if row_shard == wanted:
            kept.append(row)
    return kept


def read_manifest(path: str, shard: str | int | None = None) -> list[dict[str, str]]:
    """Manifest rows, optionally only those of one shard."""
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if tuple(header) != MANIFEST_COLUMNS:
            raise ManifestError(f"{path}: header {header}; expected {MANIFEST_COLUMNS}")
        numbered = [(line, dict(zip(MANIFEST_COLUMNS, text.rstrip("\n").split("\t"))))
                    for line, text in enumerate(handle, start=2) if text.strip()]
    if shard is not None:
        return shard_rows(numbered, shard, path)
    return [row for _, row in numbered]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="corpus name (a key of config corpora)")
    parser.add_argument("--output", required=True, help="results/manifest/<corpus>.tsv")
    add_settings_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, "manifest", corpus=args.corpus)
    if settings["corpus"] != args.corpus:
        raise ConfigError(f"--corpus {args.corpus!r} but the settings are for corpus {settings['corpus']!r}")
    corpus = open_corpus(args.corpus, dict(settings["spec"]))
    rows = build_manifest(corpus, settings["shard_size"])
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
