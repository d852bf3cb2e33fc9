"""``mcnflow extract word2vec``: the one word2vec source every corpus's text features use.

* ``word2vec.source: googlenews``: the pretrained GoogleNews binary
  (``KeyedVectors.load_word2vec_format``; ``limit`` keeps the N most frequent words). It depends on no
  corpus at all.
* ``word2vec.source: train``: gensim Word2Vec trained on the **training corpus's** captions only (one
  worker, seeded, so the result is reproducible). Evaluation corpora never reach it.

Either way the result is stored once, as ``results/features/word2vec.h5`` (``/words`` and
``/vectors`` float32, read in seconds instead of parsing a 3.6 GB binary per shard), with its
**fingerprint**: the sha256 of the words and vectors. Each text shard copies the vectors of the words
it uses and records the fingerprint; a checkpoint records the fingerprint of its training shards, and
evaluation refuses text features whose fingerprint differs. So a benchmark corpus is matched to a
checkpoint by the word2vec source they share, never by a list of corpora.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from mcnflow import __version__
from mcnflow.core.atomic import commit, temp_path_for
from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args
from mcnflow.core.ledger import read_ledger
from mcnflow.caption_split import caption_shard_path
from mcnflow.corpora import CorpusError, open_corpus
from mcnflow.core.plan import splits_captions
from mcnflow.features.captions import CaptionFileError, CaptionSource, captions_paths_from_ledgers, words_of
from mcnflow.manifest import read_manifest

log = logging.getLogger(__name__)

FORMAT = "mcnflow-word2vec"
FORMAT_VERSION = 1
STR = h5py.string_dtype(encoding="utf-8")


class WordVectors:
    """Words and their vectors (float32), with the fingerprint that identifies the source."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray, attrs: Mapping[str, Any] | None = None):
        self.words = list(words)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.words):
            raise ValueError(f"{len(self.words)} words but vectors of shape {self.vectors.shape}")
        self.attrs = dict(attrs or {})
        self._ids: dict[str, int] | None = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def ids(self) -> dict[str, int]:
        if self._ids is None:
            self._ids = {word: index for index, word in enumerate(self.words)}
        return self._ids

    def __contains__(self, word: str) -> bool:
        return word in self.ids

    def __len__(self) -> int:
        return len(self.words)

    @property
    def fingerprint(self) -> str:
        return str(self.attrs.get("fingerprint") or fingerprint(self.words, self.vectors))


def fingerprint(words: Sequence[str], vectors: np.ndarray) -> str:
    """sha256 over the words (in order) and their float32 vectors."""
    digest = hashlib.sha256()
    for word in words:
        digest.update(word.encode("utf-8") + b"\n")
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()


def write_word_vectors(path: str | Path, vectors: WordVectors) -> Path:
    """Store the source atomically (temporary name, renamed when complete)."""
    tmp = temp_path_for(path)
    try:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["format"] = FORMAT
            handle.attrs["format_version"] = FORMAT_VERSION
            handle.attrs["mcnflow_version"] = __version__
            for key, value in vectors.attrs.items():
                handle.attrs[key] = "null" if value is None else value
            handle.attrs["fingerprint"] = fingerprint(vectors.words, vectors.vectors)
            handle.create_dataset("words", data=np.array(vectors.words, dtype=object), dtype=STR)
            handle.create_dataset("vectors", data=vectors.vectors)
            handle.attrs["complete"] = True
        commit(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return Path(path)


def read_word_vectors(path: str | Path, vectors: bool = True) -> WordVectors:
    """The stored source; ``vectors=False`` reads only the words (with an empty (n_words, 0) matrix), for
    callers that then fetch the few rows they need with :func:`read_rows` (GoogleNews is 3.6 GB)."""
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ConfigError(f"{path}: not a readable word2vec file ({exc})") from exc
    with handle:
        if handle.attrs.get("format") != FORMAT or not bool(handle.attrs.get("complete", False)):
            raise ConfigError(f"{path}: not a complete {FORMAT} file (made by `mcnflow extract word2vec`)")
        words = [str(w) for w in handle["words"].asstr()[()]]
        matrix = handle["vectors"][()] if vectors else np.zeros((len(words), 0), np.float32)
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in handle.attrs.items()}
    return WordVectors(words, matrix, attrs)


def read_rows(path: str | Path, ids: Sequence[int]) -> np.ndarray:
    """Rows ``ids`` of the stored vectors, in the given order."""
    ids = np.asarray(ids, dtype=np.int64)
    unique, inverse = np.unique(ids, return_inverse=True)
    with h5py.File(path, "r") as handle:
        dataset = handle["vectors"]
        rows = dataset[unique] if len(unique) else np.zeros((0, dataset.shape[1]), np.float32)
    return np.asarray(rows, dtype=np.float32)[inverse]


# --- the two sources ---------------------------------------------------------------------------------

def googlenews_vectors(w2v: Mapping[str, Any]) -> WordVectors:
    from gensim.models import KeyedVectors

    path = Path(w2v["path"])
    if not path.is_file():
        raise ConfigError(f"config key 'features.text.word2vec.path': word2vec file not found: {path} "
                          "(GoogleNews-vectors-negative300.bin; or set features.text.word2vec.source: train)")
    log.info("loading %s (limit %s)", path, w2v["limit"])
    keyed = KeyedVectors.load_word2vec_format(str(path), binary=True, limit=w2v["limit"])
    return WordVectors(list(keyed.index_to_key), keyed.vectors,
                       {"source": "googlenews", "path": str(path), "limit": w2v["limit"] or 0})


def caption_sentences(source: CaptionSource, video_ids: Sequence[str], label: str,
                      progress: tqdm | None = None) -> Iterator[list[str]]:
    """Every caption of the videos as a list of words; unreadable captions are skipped with a warning
    (the text stage records them per video)."""
    for video_id in video_ids:
        if progress is not None:
            progress.update()
        try:
            captions = source.captions(video_id)
        except (CaptionFileError, CorpusError) as exc:
            log.warning("%s %s: captions skipped: %s", label, video_id, exc)
            continue
        for caption in captions:
            words = words_of(caption.text)
            if words:
                yield words


def corpus_sentences(corpus: str, spec: Mapping[str, Any], manifest: str, captions_paths: Mapping[str, str],
                     captions_dir: str | None) -> Iterator[list[str]]:
    """The sentences of every video of the manifest, shard by shard: a split corpus (HowTo100M's
    caption.json) is read one shard's caption file at a time."""
    by_shard: dict[str, list[str]] = {}
    for row in read_manifest(str(manifest)):
        by_shard.setdefault(row["shard"], []).append(row["video_id"])
    split = splits_captions(dict(spec))
    if split and captions_dir is None:
        raise ConfigError(f"corpus {corpus!r} has caption_format {spec.get('caption_format', 'caption_json')}: "
                          "--captions-dir (results/captions/<corpus>, made by mcnflow split-captions) is required")
    reader = open_corpus(corpus, dict(spec))
    with tqdm(total=sum(map(len, by_shard.values())), desc=f"captions {corpus}", unit="video") as progress:
        for shard, video_ids in by_shard.items():
            caption_shard = caption_shard_path(captions_dir, shard) if split else None
            try:
                source = CaptionSource(reader, spec, captions_paths, caption_shard, shard)
            except CorpusError as exc:
                raise ConfigError(str(exc)) from exc  # the shard's caption file is missing or not one
            yield from caption_sentences(source, video_ids, corpus, progress)


def trained_vectors(w2v: Mapping[str, Any], sentences: list[list[str]], corpus: str) -> WordVectors:
    from gensim.models import Word2Vec

    if not sentences:
        raise ConfigError(f"features.text.word2vec.source is train but the training corpus {corpus!r} has no captions")
    model = Word2Vec(sentences=sentences, vector_size=w2v["vector_size"], window=w2v["window"],
                     min_count=w2v["min_count"], epochs=w2v["epochs"], seed=w2v["seed"], workers=1)
    return WordVectors(list(model.wv.index_to_key), model.wv.vectors,
                       {"source": "train", "train_corpus": corpus, "vector_size": w2v["vector_size"],
                        "window": w2v["window"], "min_count": w2v["min_count"], "epochs": w2v["epochs"],
                        "seed": w2v["seed"], "sentences": len(sentences)})


def build_word_vectors(settings: Mapping[str, Any], manifest: str | None,
                       download_ledgers: Sequence[str], captions_dir: str | None = None) -> WordVectors:
    w2v = settings["word2vec"]
    if w2v["source"] == "googlenews":
        return googlenews_vectors(w2v)
    if manifest is None:
        raise ConfigError("features.text.word2vec.source is train: --manifest (the training corpus's) is required")
    corpus, spec = settings["corpus"], settings["spec"]
    captions_paths: dict[str, str] = {}
    for ledger in download_ledgers:
        captions_paths.update(captions_paths_from_ledgers(read_ledger(ledger)))
    sentences = list(corpus_sentences(corpus, spec, manifest, captions_paths, captions_dir))
    return trained_vectors(w2v, sentences, corpus)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", help="the training corpus's results/manifest/{corpus}.tsv (source train)")
    parser.add_argument("--download-ledgers", nargs="*", default=[], metavar="TSV",
                        help="its results/download/{corpus}/shard-*.tsv (their captions_path feeds vtt captions)")
    parser.add_argument("--captions-dir", help="its results/captions/{corpus} (source train; HowTo100M's caption.json "
                                               "split per shard by mcnflow split-captions)")
    parser.add_argument("--output", required=True, help="results/features/word2vec.h5")
    add_settings_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, "word2vec")
    vectors = build_word_vectors(settings, args.manifest, args.download_ledgers, args.captions_dir)
    if not len(vectors):
        raise ConfigError("the word2vec source has no words")
    write_word_vectors(args.output, vectors)
    log.info("word2vec (%s): %d words x %d -> %s", settings["word2vec"]["source"], len(vectors), vectors.dim,
             args.output)
    return 0
