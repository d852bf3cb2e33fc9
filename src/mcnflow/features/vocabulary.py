"""``mcnflow extract vocabulary``: the word vectors every corpus's text features index into.

The vocabulary holds only words that occur in some corpus's captions (tokenized as MCN does), so
the 3.6 GB GoogleNews matrix shrinks to the words the study can ever look up, stored once.

* ``word2vec.source: googlenews``: the pretrained binary (``KeyedVectors.load_word2vec_format``,
  ``limit`` = only the N most frequent words); words keep the binary's (frequency) order.
* ``word2vec.source: train``: gensim Word2Vec trained on the *training corpus's* captions (one worker,
  seeded, so the result is reproducible); words of every corpus that it knows are kept, in its order.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from mcnflow.core.config import ConfigError, add_settings_arguments, load_config
from mcnflow.core.ledger import read_ledger
from mcnflow.manifest import read_manifest
from mcnflow.corpora import CorpusError, open_corpus
from mcnflow.features.captions import CaptionFileError, CaptionSource, captions_paths_from_ledgers, words_of
from mcnflow.features.store import write_vocabulary

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpora", help="JSON: corpus name -> its spec from config.yaml `corpora` "
                                          "(default with --config: the config's corpora)")
    parser.add_argument("--train-corpus", help="the corpus whose captions train word2vec when "
                                               "word2vec.source is train (default with --config: train_corpus)")
    parser.add_argument("--manifests", nargs="+", required=True, metavar="TSV",
                        help="results/manifest/{corpus}.tsv, one per corpus (the file name is the corpus name)")
    parser.add_argument("--download-ledgers", nargs="*", default=[], metavar="TSV",
                        help="results/download/{corpus}/shard-*.tsv (their captions_path feeds vtt corpora)")
    parser.add_argument("--output", required=True, help="results/features/vocabulary.h5")
    add_settings_arguments(parser)


def corpus_of_manifest(path: str | Path) -> str:
    return Path(path).stem


def corpus_of_download_ledger(path: str | Path) -> str:
    return Path(path).parent.name


def caption_sources(corpora: Mapping[str, Mapping], manifests: Iterable[str | Path],
                    download_ledgers: Iterable[str | Path]) -> dict[str, tuple[CaptionSource, list[str]]]:
    """corpus -> (its caption source, its manifest's video ids)."""
    captions_paths: dict[str, dict[str, str]] = {}
    for ledger in download_ledgers:
        captions_paths.setdefault(corpus_of_download_ledger(ledger), {}).update(
            captions_paths_from_ledgers(read_ledger(ledger)))
    sources = {}
    for manifest in manifests:
        name = corpus_of_manifest(manifest)
        if name not in corpora:
            raise ConfigError(f"manifest {manifest}: corpus {name!r} is not in --corpora "
                              f"({', '.join(sorted(corpora))})")
        spec = corpora[name]
        video_ids = [row["video_id"] for row in read_manifest(str(manifest))]
        source = CaptionSource(open_corpus(name, dict(spec)), spec, captions_paths.get(name, {}))
        sources[name] = (source, video_ids)
    return sources


def caption_sentences(source: CaptionSource, video_ids: list[str], label: str) -> Iterator[list[str]]:
    """Every caption of the videos as a list of words (before any vocabulary filter).

    A video whose captions cannot be read is skipped with a warning (the text stage records it).
    """
    for video_id in tqdm(video_ids, desc=f"captions {label}", unit="video"):
        try:
            captions = source.captions(video_id)
        except (CaptionFileError, CorpusError) as exc:
            log.warning("%s %s: captions skipped: %s", label, video_id, exc)
            continue
        for caption in captions:
            words = words_of(caption.text)
            if words:
                yield words


def googlenews_vectors(settings: Mapping[str, Any], corpus_words: set[str]) -> tuple[list[str], np.ndarray, dict]:
    from gensim.models import KeyedVectors

    w2v = settings["word2vec"]
    path = Path(w2v["path"])
    if not path.is_file():
        raise ConfigError(f"config key 'features.text.word2vec.path': word2vec file not found: {path} "
                          "(GoogleNews-vectors-negative300.bin; or set features.text.word2vec.source: train)")
    log.info("loading %s (limit %s)", path, w2v["limit"])
    vectors = KeyedVectors.load_word2vec_format(str(path), binary=True, limit=w2v["limit"])
    words = [word for word in vectors.index_to_key if word in corpus_words]
    attrs = {"source": "googlenews", "path": str(path), "limit": w2v["limit"]}
    return words, vectors[words] if words else np.zeros((0, vectors.vector_size), np.float32), attrs


def trained_vectors(settings: Mapping[str, Any], sentences: list[list[str]],
                    corpus_words: set[str]) -> tuple[list[str], np.ndarray, dict]:
    from gensim.models import Word2Vec

    w2v = settings["word2vec"]
    if not sentences:
        raise ConfigError("word2vec.source is train but the training corpus has no captions")
    model = Word2Vec(sentences=sentences, vector_size=w2v["vector_size"], window=w2v["window"],
                     min_count=w2v["min_count"], epochs=w2v["epochs"], seed=w2v["seed"], workers=1)
    words = [word for word in model.wv.index_to_key if word in corpus_words]
    attrs = {"source": "train", "vector_size": w2v["vector_size"], "window": w2v["window"],
             "min_count": w2v["min_count"], "epochs": w2v["epochs"], "seed": w2v["seed"],
             "sentences": len(sentences)}
    return words, model.wv[words] if words else np.zeros((0, w2v["vector_size"]), np.float32), attrs


def build_vocabulary(sources: Mapping[str, tuple[CaptionSource, list[str]]], train_corpus: str | None,
                     settings: Mapping[str, Any]) -> tuple[list[str], np.ndarray, dict]:
    """(words, vectors, attrs) from the captions of every corpus."""
    source_kind = settings["word2vec"]["source"]
    corpus_words: set[str] = set()
    training_sentences: list[list[str]] = []
    for name, (source, video_ids) in sources.items():
        for words in caption_sentences(source, video_ids, name):
            corpus_words.update(words)
            if source_kind == "train" and name == train_corpus:
                training_sentences.append(words)
    if source_kind == "googlenews":
        words, vectors, attrs = googlenews_vectors(settings, corpus_words)
    elif source_kind == "train":
        if train_corpus not in sources:
            raise ConfigError(f"train_corpus {train_corpus!r} has no manifest among --manifests "
                              f"({', '.join(sorted(sources))})")
        words, vectors, attrs = trained_vectors(settings, training_sentences, corpus_words)
        attrs["train_corpus"] = train_corpus
    else:
        raise ConfigError(f"config key 'features.text.word2vec.source': {source_kind!r} is not allowed; "
                          "allowed values: 'googlenews', 'train'")
    attrs.update({"n_words": len(words), "corpus_words": len(corpus_words), "corpora": sorted(sources)})
    return words, vectors, attrs


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else None
    settings = json.loads(args.settings) if args.settings else config["features"]["text"]
    if args.corpora:
        corpora = json.loads(args.corpora)
    elif config is not None:
        corpora = config["corpora"]
    else:
        raise ConfigError("--corpora is required with --settings")
    train_corpus = args.train_corpus or (config or {}).get("train_corpus")
    sources = caption_sources(corpora, args.manifests, args.download_ledgers)
    words, vectors, attrs = build_vocabulary(sources, train_corpus, settings)
    if not words:
        raise ConfigError(f"the vocabulary is empty: no caption word of {', '.join(sorted(sources))} has a vector")
    write_vocabulary(args.output, words, vectors, attrs)
    log.info("vocabulary: %d words (%d distinct caption words) -> %s", len(words), attrs["corpus_words"], args.output)
    return 0
