"""``mcnflow extract text``: one shard's captions as tokens, with the word2vec vectors they need.

Per video (``/videos/<video_id>`` group, see :mod:`mcnflow.features.store`): ``token_ids`` int32 (all
captions' tokens concatenated, as ids into the shard's own word table), ``offsets`` int64 (caption
``i`` is ``token_ids[offsets[i]:offsets[i+1]]``), ``start`` / ``end`` float32 seconds. The shard's
word table (``/vocabulary/words``, ``/vocabulary/vectors`` float32) holds the vectors of exactly the
words the shard uses, copied from the one word2vec source (``results/features/word2vec.h5``); the
root attribute ``word2vec_fingerprint`` says which source. So a text shard is self-contained: training
reads only its corpus's shards, and evaluation matches a benchmark corpus to a checkpoint by the
fingerprint alone.

Captions keep their order and a caption without any in-vocabulary word is still stored (with no
tokens), so caption ``i`` stays annotation segment ``i`` (YouCook2's captions are its annotated steps).
At most ``max_words`` tokens are stored per caption. This loses nothing MCN uses: training merges
neighbouring captions into one clip and keeps the merged list's first ``max_words`` words.

Outcomes: ok; no_media (did not survive normalization, or absent from the normalize ledger);
no_captions (no caption at all); error (its caption file or corpus entry could not be read, e.g. a
caption.json entry whose start/end/text lengths differ or whose times are not numbers: the message names
the video). HowTo100M's captions come from the shard's own caption file (``--captions``, made by
``mcnflow split-captions``), so a job's memory and time do not depend on the corpus size.
A killed job resumes: each video's tokens are journaled with ShardRun and kept in the shard's work
directory until the shard file is assembled.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from mcnflow.core.atomic import atomic_path
from mcnflow.core.config import ConfigError, add_settings_arguments, canonical_json, settings_from_args
from mcnflow.core.ledger import FEATURE_COLUMNS, ledger_by_id, read_ledger
from mcnflow.core.shard_stage import ShardRun
from mcnflow.core.status import FeatureStatus, NormalizeStatus
from mcnflow.corpora import CorpusError, open_corpus
from mcnflow.core.plan import splits_captions
from mcnflow.features.captions import CaptionFileError, CaptionSource, captions_paths_from_ledgers, tokenize
from mcnflow.features.store import TEXT_FIELDS, ShardWriter
from mcnflow.features.word2vec import read_rows, read_word_vectors
from mcnflow.manifest import read_manifest

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--manifest", required=True, help="results/manifest/{corpus}.tsv")
    parser.add_argument("--shard", required=True, help="5-digit shard id, e.g. 00003")
    parser.add_argument("--download-ledger", help="results/download/{corpus}/shard-{shard}.tsv "
                                                  "(its captions_path is read for caption_format vtt)")
    parser.add_argument("--captions", help="results/captions/{corpus}/shard-{shard}.jsonl: the shard's caption file "
                                           "(mcnflow split-captions; HowTo100M caption_json / raw_caption_json)")
    parser.add_argument("--normalize-ledger", required=True, help="results/normalize/{corpus}/shard-{shard}.tsv")
    parser.add_argument("--word2vec", required=True, help="results/features/word2vec.h5")
    parser.add_argument("--output", required=True, help="results/features/{corpus}/text/shard-{shard}.h5")
    parser.add_argument("--ledger", required=True, help="per-video outcomes (TSV)")
    add_settings_arguments(parser)


def encode_captions(captions, word_ids: Mapping[str, int], max_words: int) -> dict[str, np.ndarray]:
    """The TEXT_FIELDS arrays of one video's captions (order kept, empty captions kept); token ids
    are ``word_ids``' ids (the word2vec source's, until the shard's own table is made)."""
    ids: list[int] = []
    offsets = [0]
    for caption in captions:
        ids.extend(word_ids[word] for word in tokenize(caption.text, word_ids, max_words))
        offsets.append(len(ids))
    return {"token_ids": np.asarray(ids, dtype=np.int64),
            "offsets": np.asarray(offsets, dtype=np.int64),
            "start": np.asarray([c.start for c in captions], dtype=np.float32),
            "end": np.asarray([c.end for c in captions], dtype=np.float32)}


def shard_word_table(fields: Mapping[str, Mapping[str, np.ndarray]]) -> tuple[np.ndarray, dict[int, int]]:
    """The source ids the shard uses (first-seen order) and source id -> the shard table's id."""
    used: dict[int, int] = {}
    for video_fields in fields.values():
        for source_id in video_fields["token_ids"].tolist():
            used.setdefault(int(source_id), len(used))
    return np.asarray(list(used), dtype=np.int64), used


def _video_outcome(video_id: str, normalize: Mapping[str, Mapping[str, str]], source: CaptionSource,
                   word_ids: Mapping[str, int], max_words: int) -> tuple[dict[str, Any], dict | None]:
    def row(status: str, message: str = "", length: int = 0) -> dict[str, Any]:
        return {"video_id": video_id, "status": status, "message": message, "length": length}

    normalized = normalize.get(video_id)
    if normalized is None or normalized.get("status") != NormalizeStatus.OK:
        return row(FeatureStatus.NO_MEDIA, f"normalize status {normalized.get('status') if normalized else 'missing'}"), None
    try:
        captions = source.captions(video_id)
    except (CaptionFileError, CorpusError) as exc:
        return row(FeatureStatus.ERROR, str(exc)), None
    if not captions:
        return row(FeatureStatus.NO_CAPTIONS, f"no {source.caption_format} captions"), None
    fields = encode_captions(captions, word_ids, max_words)
    return row(FeatureStatus.OK, length=len(captions)), fields


def extract_shard(video_ids: list[str], normalize: Mapping[str, Mapping[str, str]], source: CaptionSource,
                  word2vec_path: str | Path, settings: Mapping[str, Any], shard: str, output: str | Path,
                  ledger: str | Path, attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Write the shard's HDF5 file, then its ledger; return the ledger rows (``video_ids`` order)."""
    word2vec = read_word_vectors(word2vec_path, vectors=False)
    corpus, max_words = settings["corpus"], settings["max_words"]
    run = ShardRun(ledger, FEATURE_COLUMNS, outputs=[output],
                   fingerprint=canonical_json({"settings": settings, "word2vec": word2vec.fingerprint}),
                   trust=lambda video_id, row: row["status"] != FeatureStatus.OK
                   or run_part_intact(run, video_id))
    fields: dict[str, dict[str, np.ndarray]] = {}
    for video_id in tqdm(video_ids, desc=f"text {corpus}/{shard}", unit="video"):
        earlier = run.settled(video_id)
        if earlier is not None:
            if earlier["status"] == FeatureStatus.OK:
                fields[video_id] = load_part(run.part_path(video_id))
            continue
        row, video_fields = _video_outcome(video_id, normalize, source, word2vec.ids, max_words)
        if video_fields is not None:
            save_part(run.part_path(video_id), video_fields)
            fields[video_id] = video_fields
        run.record(row)

    source_ids, table_ids = shard_word_table(fields)
    vectors = read_rows(word2vec_path, source_ids)
    statuses = {row["video_id"]: row for row in run.journal.read().values()}
    with ShardWriter(output, "text", corpus, int(shard), attrs=attrs, compression=settings["compression"]) as writer:
        writer.add_word_table([word2vec.words[i] for i in source_ids.tolist()], vectors)
        for video_id in video_ids:
            if video_id in fields:
                video_fields = dict(fields[video_id])
                video_fields["token_ids"] = np.asarray([table_ids[i] for i in video_fields["token_ids"].tolist()],
                                                       dtype=np.int32)
                writer.add(video_id, video_fields, attrs={"n_tokens": int(len(video_fields["token_ids"]))})
            else:
                writer.mark(video_id, statuses[video_id]["status"])
    return run.finish(video_ids)  # the ledger, after the HDF5 file is in place


def save_part(path: Path, fields: Mapping[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **fields)


def load_part(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {field: data[field] for field in TEXT_FIELDS}


def run_part_intact(run: ShardRun, video_id: str) -> bool:
    try:
        load_part(run.part_path(video_id))
        return True
    except (OSError, ValueError, KeyError):
        return False


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, "features.text", corpus=args.corpus)
    if settings["corpus"] != args.corpus:
        raise ConfigError(f"--corpus {args.corpus!r} but the settings are for corpus {settings['corpus']!r}")
    spec = settings["spec"]
    if not (args.shard.isdigit() and len(args.shard) == 5):
        raise ConfigError(f"--shard {args.shard!r}: expected a 5-digit shard id such as 00003")
    captions_paths = captions_paths_from_ledgers(read_ledger(args.download_ledger)) if args.download_ledger else {}
    caption_format = spec.get("caption_format", "caption_json")
    if caption_format == "vtt" and not args.download_ledger:
        raise ConfigError(f"corpus {args.corpus!r} has caption_format vtt: --download-ledger is required")
    if splits_captions(dict(spec)) and not args.captions:
        raise ConfigError(f"corpus {args.corpus!r} has caption_format {caption_format}: --captions (its shard's "
                          "caption file, results/captions/<corpus>/shard-NNNNN.jsonl from mcnflow split-captions) "
                          "is required")
    try:
        source = CaptionSource(open_corpus(args.corpus, dict(spec)), spec, captions_paths, args.captions, args.shard)
    except CorpusError as exc:
        raise ConfigError(str(exc)) from exc  # the shard's caption file itself is missing or not one
    video_ids = [row["video_id"] for row in read_manifest(args.manifest, args.shard)]
    word2vec_attrs = read_word_vectors(args.word2vec, vectors=False).attrs
    attrs = {"word2vec_fingerprint": word2vec_attrs["fingerprint"],
             "word2vec_source": str(word2vec_attrs.get("source", "")),
             "max_words": settings["max_words"], "caption_format": caption_format,
             "tokenizer": "re.findall(r\"[\\w']+\", text), case kept, out-of-vocabulary words dropped"}
    rows = extract_shard(video_ids, ledger_by_id(args.normalize_ledger), source, args.word2vec, settings,
                         args.shard, args.output, args.ledger, attrs)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    log.info("%s shard %s: %s", args.corpus, args.shard, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0
