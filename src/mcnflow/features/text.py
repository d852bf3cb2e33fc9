"""``mcnflow extract text``: one shard's captions as token ids into the shared vocabulary.

Per video (``/videos/<video_id>`` group, see :mod:`mcnflow.features.store`): ``token_ids`` int32 (all
captions' ids concatenated), ``offsets`` int64 (caption ``i`` is ``token_ids[offsets[i]:offsets[i+1]]``),
``start`` / ``end`` float32 seconds. Captions keep their order and a caption without any in-vocabulary
word is still stored (with no tokens), so caption ``i`` stays annotation segment ``i`` (YouCook2's
captions are its annotated steps).

At most ``max_words`` tokens are stored per caption. This loses nothing MCN uses: training merges
neighbouring captions into one clip and keeps the merged list's first ``max_words`` words, so no
caption can contribute more than its own first ``max_words``.

Outcomes: ok; no_media (did not survive normalization, or absent from the normalize ledger);
no_captions (no caption at all); error (its caption file or corpus entry could not be read).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from mcnflow.core.atomic import TMP_PREFIX
from mcnflow.core.checksum import file_sha256
from mcnflow.core.config import ConfigError, add_settings_arguments, load_config
from mcnflow.corpora import CorpusError, open_corpus
from mcnflow.core.ledger import FEATURE_COLUMNS, ledger_by_id, read_ledger, write_ledger
from mcnflow.manifest import read_manifest
from mcnflow.features.captions import CaptionFileError, CaptionSource, captions_paths_from_ledgers, tokenize
from mcnflow.features.store import ShardWriter, read_vocabulary

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--corpus-spec", help="JSON: the corpus's spec from config.yaml `corpora` "
                                              "(default with --config: corpora.<corpus>)")
    parser.add_argument("--manifest", required=True, help="results/manifest/{corpus}.tsv")
    parser.add_argument("--shard", required=True, help="5-digit shard id, e.g. 00003")
    parser.add_argument("--download-ledger", help="results/download/{corpus}/shard-{shard}.tsv "
                                                  "(its captions_path is read for caption_format vtt)")
    parser.add_argument("--normalize-ledger", required=True, help="results/normalize/{corpus}/shard-{shard}.tsv")
    parser.add_argument("--vocabulary", required=True, help="results/features/vocabulary.h5")
    parser.add_argument("--output", required=True, help="results/features/{corpus}/text/shard-{shard}.h5")
    parser.add_argument("--ledger", required=True, help="per-video outcomes (TSV)")
    add_settings_arguments(parser)


def encode_captions(captions, word_ids: Mapping[str, int], max_words: int) -> dict[str, np.ndarray]:
    """The TEXT_FIELDS arrays of one video's captions (order kept, empty captions kept)."""
    ids: list[int] = []
    offsets = [0]
    for caption in captions:
        ids.extend(word_ids[word] for word in tokenize(caption.text, word_ids, max_words))
        offsets.append(len(ids))
    return {"token_ids": np.asarray(ids, dtype=np.int32),
            "offsets": np.asarray(offsets, dtype=np.int64),
            "start": np.asarray([c.start for c in captions], dtype=np.float32),
            "end": np.asarray([c.end for c in captions], dtype=np.float32)}


def extract_shard(video_ids: list[str], normalize: Mapping[str, Mapping[str, str]], source: CaptionSource,
                  word_ids: Mapping[str, int], corpus: str, shard: str, output: str | Path,
                  attrs: Mapping[str, Any], max_words: int, compression: str | None = None) -> list[dict[str, Any]]:
    """Write the shard's HDF5 file; return one ledger row per video, in ``video_ids`` order."""
    output = Path(output)
    for stale in output.parent.glob(f"{TMP_PREFIX}{output.name}.*"):  # this shard's leftovers only
        stale.unlink(missing_ok=True)
    rows: list[dict[str, Any]] = []
    with ShardWriter(output, "text", corpus, int(shard), attrs=attrs, compression=compression) as writer:
        for video_id in tqdm(video_ids, desc=f"text {corpus}/{shard}", unit="video"):
            def outcome(status: str, message: str = "", length: int = 0) -> None:
                rows.append({"video_id": video_id, "status": status, "message": message, "length": length})
                if status != "ok":
                    writer.mark(video_id, status)

            row = normalize.get(video_id)
            if row is None or row.get("status") != "ok":
                outcome("no_media", f"normalize status {row.get('status') if row else 'missing'}")
                continue
            try:
                captions = source.captions(video_id)
            except (CaptionFileError, CorpusError) as exc:
                outcome("error", str(exc))
                continue
            if not captions:
                outcome("no_captions", f"no {source.caption_format} captions")
                continue
            fields = encode_captions(captions, word_ids, max_words)
            writer.add(video_id, fields, attrs={"n_tokens": int(len(fields["token_ids"]))})
            outcome("ok", length=len(captions))
    return rows


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    settings = json.loads(args.settings) if args.settings else config["features"]["text"]
    if args.corpus_spec:
        spec = json.loads(args.corpus_spec)
    elif config is not None and args.corpus in config["corpora"]:
        spec = config["corpora"][args.corpus]
    else:
        raise ConfigError(f"--corpus-spec is required (corpus {args.corpus!r} has no spec in the given config)")
    if not (args.shard.isdigit() and len(args.shard) == 5):
        raise ConfigError(f"--shard {args.shard!r}: expected a 5-digit shard id such as 00003")
    max_words = settings["max_words"]

    words, _, vocab_attrs = read_vocabulary(args.vocabulary)
    vocabulary_source = vocab_attrs.get("source", "")
    vocabulary_source = vocabulary_source.decode() if isinstance(vocabulary_source, bytes) else str(vocabulary_source)
    word_ids = {word: index for index, word in enumerate(words)}
    captions_paths = captions_paths_from_ledgers(read_ledger(args.download_ledger)) if args.download_ledger else {}
    caption_format = spec.get("caption_format", "caption_json")
    if caption_format == "vtt" and not args.download_ledger:
        raise ConfigError(f"corpus {args.corpus!r} has caption_format vtt: --download-ledger is required")
    source = CaptionSource(open_corpus(args.corpus, dict(spec)), spec, captions_paths)

    video_ids = [row["video_id"] for row in read_manifest(args.manifest, args.shard)]
    attrs = {"vocabulary": str(args.vocabulary), "vocabulary_sha256": file_sha256(args.vocabulary),
             "vocabulary_words": len(words), "vocabulary_source": vocabulary_source,
             "max_words": max_words, "caption_format": caption_format,
             "tokenizer": "re.findall(r\"[\\w']+\", text), case kept, out-of-vocabulary words dropped"}
    rows = extract_shard(video_ids, ledger_by_id(args.normalize_ledger), source, word_ids, args.corpus,
                         args.shard, args.output, attrs, max_words)
    write_ledger(args.ledger, rows, FEATURE_COLUMNS)  # after the HDF5 file is in place
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    log.info("%s shard %s: %s", args.corpus, args.shard, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0
