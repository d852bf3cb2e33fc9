"""Reading text shards: each video's caption tokens as word vectors, from the shard's own word table.

Training and evaluation both read text through :class:`TextIndex`; it also checks that every shard
was made from the same word2vec source (``word2vec_fingerprint``), the one fact a checkpoint and an
evaluation corpus must share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from mcnflow.features.store import FeatureIndex, ShardFiles, ShardReader


class WordSourceMismatch(ValueError):
    """Text features made from another word2vec source than the one required."""


def shard_fingerprint(path: str | Path) -> str:
    reader = ShardReader(path)
    try:
        value = reader.attrs.get("word2vec_fingerprint")
    finally:
        reader.close()
    if not value:
        raise WordSourceMismatch(f"{path}: records no word2vec_fingerprint (made by an older mcnflow; "
                                 "rerun `mcnflow extract text`)")
    return str(value)


class TextIndex(FeatureIndex):
    """video_id -> captions over many text shards; ``read`` adds ``vectors`` (one row per token).

    Word vectors are gathered row by row from the shard's mapped ``/vocabulary/vectors``: a process
    never holds a whole word table (tens of MB per shard, over a thousand shards in HowTo100M).
    """

    def __init__(self, paths: Iterable[str | Path], files: ShardFiles | None = None):
        paths = [str(p) for p in paths]
        fingerprints = {p: shard_fingerprint(p) for p in paths}
        distinct = sorted(set(fingerprints.values()))
        if len(distinct) > 1:
            example = {fp: next(p for p, f in fingerprints.items() if f == fp) for fp in distinct}
            raise WordSourceMismatch("text shards come from different word2vec sources: "
                                     + "; ".join(f"{p} ({fp[:12]})" for fp, p in example.items()))
        self.fingerprint = distinct[0] if distinct else ""
        super().__init__(paths, files)

    def require(self, fingerprint: str, what: str) -> None:
        """Refuse these shards unless they were made from the word2vec source ``fingerprint``."""
        if fingerprint and self.fingerprint and fingerprint != self.fingerprint:
            raise WordSourceMismatch(f"these text features come from word2vec source {self.fingerprint[:12]}, "
                                     f"but {what} used {fingerprint[:12]}")

    def vocabulary(self, video_id: str) -> np.ndarray:
        """The (n_words, dim) word vectors the video's token ids index (its shard's table, mapped)."""
        return self.files.table(self._where[video_id].path, "vocabulary/vectors")

    def read(self, video_id: str) -> dict[str, np.ndarray]:
        fields = super().read(video_id)
        fields["vectors"] = np.asarray(self.vocabulary(video_id)[fields["token_ids"]], dtype=np.float32)
        return fields

    @property
    def dim(self) -> int | None:
        for video_id in self._where:
            try:
                return int(self.vocabulary(video_id).shape[1])
            finally:
                self.files.close()  # no open HDF5 handle may be inherited by forked DataLoader workers
        return None
