"""Word2vec sources and text shards for tests, written with the real extraction code."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mcnflow.features.store import ShardWriter
from mcnflow.features.text import encode_captions, shard_word_table
from mcnflow.features.word2vec import WordVectors, write_word_vectors, read_word_vectors


def write_word2vec(path: Path, words: Sequence[str], vectors: np.ndarray) -> WordVectors:
    write_word_vectors(path, WordVectors(words, vectors, {"source": "test"}))
    return read_word_vectors(path)


def write_text_shard(path: Path, corpus: str, captions: Mapping[str, list], word2vec: WordVectors,
                     max_words: int = 20, marks: Mapping[str, str] | None = None) -> Path:
    """A text shard as `mcnflow extract text` writes it: ``captions`` video id -> list of Caption."""
    fields = {vid: encode_captions(caps, word2vec.ids, max_words) for vid, caps in captions.items()}
    source_ids, table_ids = shard_word_table(fields)
    attrs = {"word2vec_fingerprint": word2vec.fingerprint, "max_words": max_words}
    with ShardWriter(path, "text", corpus, 0, attrs=attrs) as writer:
        writer.add_word_table([word2vec.words[i] for i in source_ids.tolist()], word2vec.vectors[source_ids])
        for vid, video_fields in fields.items():
            video_fields = dict(video_fields)
            video_fields["token_ids"] = np.asarray([table_ids[i] for i in video_fields["token_ids"].tolist()],
                                                   dtype=np.int32)
            writer.add(vid, video_fields)
        for vid, status in (marks or {}).items():
            writer.mark(vid, status)
    return path
