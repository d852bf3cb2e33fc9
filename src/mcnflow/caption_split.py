"""``mcnflow split-captions``: a corpus's caption.json, read once, into one caption shard per manifest shard.

HowTo100M's caption.json is ~8 GB (1.22M videos, 136M captions). It is streamed once (ijson: one
entry in memory at a time) and each video's entry is appended to the caption shard of the shard the
manifest gives it (``<output>/shard-NNNNN.jsonl``, format in :mod:`mcnflow.corpora.howto100m`); every
``extract text`` job then reads only its own shard's file, whatever the corpus size.

Memory: the manifest's video -> shard table plus at most ``features.text.split_buffer_mb`` of entries
waiting to be appended. Every shard of the manifest gets a file (a header alone when caption.json has
none of its videos). The whole directory appears at once when complete (a killed job leaves only a
``.tmp-`` directory, removed by the next run). Entries are copied as they are: a malformed one becomes
that video's ``error`` row in the text ledger, with the video named.
"""

from __future__ import annotations

import argparse
import json
import logging
from array import array
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from mcnflow.core.atomic import atomic_directory, remove_stale_temp_dirs
from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args
from mcnflow.core.plan import splits_captions
from mcnflow.core.shards import shard_name
from mcnflow.corpora import open_corpus
from mcnflow.corpora.howto100m import caption_shard_header
from mcnflow.manifest import ManifestError, iter_manifest

log = logging.getLogger(__name__)

BYTES_PER_MB = 1024 * 1024


def caption_shard_path(directory: str | Path, shard: str | int) -> Path:
    """Where the caption shard of ``shard`` ("00003" or 3) lives in the split's output directory."""
    return Path(directory) / f"shard-{shard_name(shard)}.jsonl"


def shard_table(manifest: str) -> tuple[dict[str, int], array, list[str]]:
    """video_id -> its row number, row number -> index into the shard names, and the shard names
    (for 1.22M videos the table is ~150 MB)."""
    shards: list[str] = []
    numbers: dict[str, int] = {}
    rows: dict[str, int] = {}
    shard_of_row = array("i")
    for line, row in iter_manifest(manifest):
        try:
            shard = shard_name(row["shard"])  # "3" and "00003" name the same shard (and file)
        except (KeyError, ValueError):
            raise ManifestError(f"{manifest} line {line}: shard {row.get('shard')!r} is not a number") from None
        if shard not in numbers:
            numbers[shard] = len(shards)
            shards.append(shard)
        rows[row["video_id"]] = len(shard_of_row)
        shard_of_row.append(numbers[shard])
    return rows, shard_of_row, shards


def split_captions(corpus, manifest: str, output: str | Path, buffer_bytes: int) -> dict[str, int]:
    """Write ``output/shard-NNNNN.jsonl`` for every shard of ``manifest``; return counts."""
    rows, shard_of_row, shards = shard_table(manifest)
    remove_stale_temp_dirs(output)
    counts = {"videos": len(rows), "shards": len(shards), "entries": 0, "not_in_manifest": 0, "duplicates": 0}
    seen = bytearray(len(shard_of_row))
    with atomic_directory(output) as tmp:
        paths = [caption_shard_path(tmp, shard) for shard in shards]
        for shard, path in zip(shards, paths):
            path.write_text(json.dumps(caption_shard_header(corpus.name, shard)) + "\n", encoding="utf-8")
        pending: dict[int, list[str]] = defaultdict(list)
        pending_bytes = 0

        def flush() -> None:
            # append mode, one file open at a time: 1,220 shards never hold 1,220 descriptors
            for index, lines in pending.items():
                with open(paths[index], "a", encoding="utf-8") as handle:
                    handle.writelines(lines)
            pending.clear()

        for video_id, entry in corpus.caption_entries():
            row = rows.get(video_id)
            if row is None:
                counts["not_in_manifest"] += 1
                continue
            if seen[row]:
                counts["duplicates"] += 1  # written twice; the reader keeps the later one, as json.load did
            seen[row] = 1
            line = json.dumps({"video_id": video_id, "captions": entry}, ensure_ascii=False) + "\n"
            pending[shard_of_row[row]].append(line)
            pending_bytes += len(line)
            counts["entries"] += 1
            if pending_bytes >= buffer_bytes:
                flush()
                pending_bytes = 0
        flush()
    return counts


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="corpus name (a key of config corpora)")
    parser.add_argument("--manifest", required=True, help="results/manifest/<corpus>.tsv (gives each video's shard)")
    parser.add_argument("--output", required=True, help="results/captions/<corpus> (one shard-NNNNN.jsonl per shard)")
    add_settings_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings: Mapping[str, Any] = settings_from_args(args, "split_captions", corpus=args.corpus)
    if settings["corpus"] != args.corpus:
        raise ConfigError(f"--corpus {args.corpus!r} but the settings are for corpus {settings['corpus']!r}")
    spec = dict(settings["spec"])
    if not splits_captions(spec):
        raise ConfigError(f"corpus {args.corpus!r} (reader {spec.get('reader')!r}, caption_format "
                          f"{spec.get('caption_format', 'caption_json')!r}) has no caption file to split")
    corpus = open_corpus(args.corpus, spec)
    counts = split_captions(corpus, args.manifest, args.output, int(settings["buffer_mb"] * BYTES_PER_MB))
    log.info("%s: %d caption entries into %d shard(s) for %d manifest videos; %d entries of videos not in the "
             "manifest skipped, %d duplicate ids", args.corpus, counts["entries"], counts["shards"], counts["videos"],
             counts["not_in_manifest"], counts["duplicates"])
    return 0
