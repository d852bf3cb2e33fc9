"""The HDF5 feature layout: one file per shard per modality, one dataset per video.

This module is the contract between extraction (writers) and training / evaluation (readers).
docs/hdf5_layout.md describes the same layout for users who read the files with plain h5py.

    /                      attrs: format, format_version, modality, corpus, shard, mcnflow_version,
                                  complete (set last), plus the extractor's settings
    /videos/<video_id>     video: float16 (seconds, 2048); audio: float16 (40, frames)
                           text: a group with token_ids int32 (n_tokens,), offsets int64 (n+1,),
                                 start float32 (n,), end float32 (n,)
                           attrs: per-video facts (duration, source_checksum, ...)
    /index/video_id        every video of the shard (vlen str), with
    /index/status          its outcome (ok, no_audio, ...; see mcnflow.core.ledger.FEATURE_STATUSES)
    /index/length          rows / frames / captions stored for it (0 when nothing is stored)
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from mcnflow import __version__
from mcnflow.core.atomic import commit, temp_path_for

FORMAT = "mcnflow-features"
FORMAT_VERSION = 1
MODALITIES = ("video", "audio", "text")
TEXT_FIELDS = ("token_ids", "offsets", "start", "end")
STR = h5py.string_dtype(encoding="utf-8")


class IncompleteShardError(RuntimeError):
    """The file was not completely written (its writer was killed) or is not an mcnflow shard."""


def _attr_value(value: Any) -> Any:
    """HDF5 attributes hold scalars, strings and arrays; anything else is stored as JSON text."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float, str, np.generic, np.ndarray)):
        return value
    return json.dumps(value, sort_keys=True)


class ShardWriter:
    """Write one shard file under a temporary name; it appears at ``path`` only when complete."""

    def __init__(self, path: str | Path, modality: str, corpus: str, shard: int,
                 attrs: Mapping[str, Any] | None = None, compression: str | None = None):
        if modality not in MODALITIES:
            raise ValueError(f"modality {modality!r}; allowed: {', '.join(MODALITIES)}")
        if compression not in (None, "lzf", "gzip"):
            raise ValueError(f"compression {compression!r}; allowed: None, 'lzf', 'gzip'")
        self.path = Path(path)
        self.modality = modality
        self.compression = compression
        self._root_attrs = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "modality": modality,
            "corpus": corpus, "shard": int(shard), "mcnflow_version": __version__,
            **dict(attrs or {}),
        }
        self._index: list[tuple[str, str, int]] = []
        self._tmp: Path | None = None
        self._file: h5py.File | None = None

    def __enter__(self) -> "ShardWriter":
        self._tmp = temp_path_for(self.path)
        self._file = h5py.File(self._tmp, "w")
        for key, value in self._root_attrs.items():
            self._file.attrs[key] = _attr_value(value)
        self._file.attrs["complete"] = False
        self._file.create_group("videos")
        return self

    def _dataset(self, group: h5py.Group, name: str, array: np.ndarray) -> None:
        kwargs = {"compression": self.compression} if self.compression and array.size else {}
        group.create_dataset(name, data=array, **kwargs)

    def add(self, video_id: str, data: np.ndarray | Mapping[str, np.ndarray],
            attrs: Mapping[str, Any] | None = None, status: str = "ok") -> None:
        """Store one video's features (an array, or for text a dict of TEXT_FIELDS arrays)."""
        assert self._file is not None, "use ShardWriter as a context manager"
        videos = self._file["videos"]
        if self.modality == "text":
            if not isinstance(data, Mapping) or set(data) != set(TEXT_FIELDS):
                raise ValueError(f"text features need exactly the fields {TEXT_FIELDS}")
            node = videos.create_group(video_id)
            for field in TEXT_FIELDS:
                self._dataset(node, field, np.asarray(data[field]))
            length = int(len(data["start"]))
        else:
            array = np.asarray(data)
            if array.ndim != 2:
                raise ValueError(f"{video_id}: {self.modality} features must be 2-D, got shape {array.shape}")
            self._dataset(videos, video_id, array)
            node = videos[video_id]
            length = int(array.shape[0] if self.modality == "video" else array.shape[1])
        for key, value in (attrs or {}).items():
            node.attrs[key] = _attr_value(value)
        self._index.append((video_id, status, length))

    def mark(self, video_id: str, status: str) -> None:
        """Record a video of the shard for which nothing is stored (e.g. ``no_audio``)."""
        self._index.append((video_id, status, 0))

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._file is not None and self._tmp is not None
        try:
            if exc_type is None:
                index = self._file.create_group("index")
                index.create_dataset("video_id", data=np.array([r[0] for r in self._index], dtype=object), dtype=STR)
                index.create_dataset("status", data=np.array([r[1] for r in self._index], dtype=object), dtype=STR)
                index.create_dataset("length", data=np.array([r[2] for r in self._index], dtype=np.int64))
                self._file.attrs["complete"] = True
            self._file.close()
            if exc_type is None:
                commit(self._tmp, self.path)
        finally:
            if self._tmp.exists() and (exc_type is not None):
                self._tmp.unlink()


class ShardReader:
    """Read a shard lazily: the file opens on first use, in the process that uses it.

    Safe to pass to DataLoader workers: pickling drops the open handle, so each worker opens its own.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: h5py.File | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None}

    def _open(self) -> h5py.File:
        if self._file is None:
            try:
                handle = h5py.File(self.path, "r")
            except OSError as exc:
                raise IncompleteShardError(f"{self.path}: cannot be opened as HDF5 ({exc})") from exc
            if handle.attrs.get("format") != FORMAT or not bool(handle.attrs.get("complete", False)):
                handle.close()
                raise IncompleteShardError(f"{self.path}: not a complete {FORMAT} file")
            self._file = handle
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def attrs(self) -> dict[str, Any]:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in self._open().attrs.items()}

    @property
    def modality(self) -> str:
        return str(self.attrs["modality"])

    def index(self) -> list[dict[str, Any]]:
        group = self._open()["index"]
        ids = group["video_id"].asstr()[()]
        statuses = group["status"].asstr()[()]
        lengths = group["length"][()]
        return [{"video_id": str(v), "status": str(s), "length": int(n)} for v, s, n in zip(ids, statuses, lengths)]

    def video_ids(self, status: str | None = "ok") -> list[str]:
        return [row["video_id"] for row in self.index() if status is None or row["status"] == status]

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._open()["videos"]

    def read(self, video_id: str) -> np.ndarray | dict[str, np.ndarray]:
        node = self._open()["videos"][video_id]
        if isinstance(node, h5py.Group):
            return {field: node[field][()] for field in TEXT_FIELDS}
        return node[()]

    def video_attrs(self, video_id: str) -> dict[str, Any]:
        return dict(self._open()["videos"][video_id].attrs)


def check_rate(paths: Iterable[str | Path], key: str, expected: float, user: str) -> None:
    """Clips are cut assuming fixed rates (1 video row / s, 100 log-mel frames / s): refuse shards whose
    extractor recorded another ``key`` (``fps`` or ``hop_ms``) in their attributes."""
    for path in paths:
        reader = ShardReader(path)
        try:
            value = reader.attrs.get(key)
        finally:
            reader.close()
        if isinstance(value, (int, float, np.number)) and float(value) != expected:
            raise ValueError(f"{path}: {key}={value}; {user} cuts clips assuming {key}={expected:g}")


def is_complete(path: str | Path) -> bool:
    """True when ``path`` is a finished shard file (what a rerun may trust)."""
    try:
        with h5py.File(path, "r") as handle:
            return handle.attrs.get("format") == FORMAT and bool(handle.attrs.get("complete", False))
    except (OSError, FileNotFoundError):
        return False


class FeatureIndex:
    """video_id -> reader over many shard files of one modality."""

    def __init__(self, paths: Iterable[str | Path]):
        self.readers = [ShardReader(p) for p in paths]
        self._where: dict[str, ShardReader] = {}
        self.status: dict[str, str] = {}
        for reader in self.readers:
            for row in reader.index():
                self.status[row["video_id"]] = row["status"]
                if row["status"] == "ok":
                    self._where[row["video_id"]] = reader
            reader.close()  # reopen lazily where used (e.g. in a DataLoader worker)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._where

    def video_ids(self) -> list[str]:
        return list(self._where)

    def read(self, video_id: str):
        return self._where[video_id].read(video_id)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


# --- vocabulary (text) ---------------------------------------------------------------------------

def write_vocabulary(path: str | Path, words: list[str], vectors: np.ndarray, attrs: Mapping[str, Any]) -> Path:
    """Store the word list and its vectors once; text shards store ids into it."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[0] != len(words):
        raise ValueError(f"{len(words)} words but {vectors.shape[0]} vectors")
    tmp = temp_path_for(path)
    try:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["format"] = FORMAT
            handle.attrs["format_version"] = FORMAT_VERSION
            handle.attrs["modality"] = "vocabulary"
            handle.attrs["mcnflow_version"] = __version__
            for key, value in attrs.items():
                handle.attrs[key] = _attr_value(value)
            handle.create_dataset("words", data=np.array(words, dtype=object), dtype=STR)
            handle.create_dataset("vectors", data=vectors)
            handle.attrs["complete"] = True
        commit(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return Path(path)


def read_vocabulary(path: str | Path) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    with h5py.File(path, "r") as handle:
        if handle.attrs.get("modality") != "vocabulary" or not bool(handle.attrs.get("complete", False)):
            raise IncompleteShardError(f"{path}: not a complete vocabulary file")
        words = [str(w) for w in handle["words"].asstr()[()]]
        vectors = handle["vectors"][()]
        attrs = dict(handle.attrs)
    return words, vectors, attrs
