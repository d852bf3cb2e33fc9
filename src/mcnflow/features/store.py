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

A resumable extractor keeps each finished video in its own *part* (:func:`write_part`, an ``.npz``
in the shard's work directory, see mcnflow.core.shard_stage) and builds the shard file from the
parts at the end (:func:`assemble_shard`); parts are never read by training or evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from mcnflow import __version__
from mcnflow.core.atomic import atomic_path, commit, temp_path_for
from mcnflow.core.status import FeatureStatus

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

    def add_part(self, video_id: str, part: str | Path, status: str = FeatureStatus.OK) -> None:
        """Store one video from its part file (see :func:`write_part`)."""
        loaded = read_part(part)
        self.add(video_id, loaded.data, loaded.attrs, status=status)

    def add_word_table(self, words: list[str], vectors: np.ndarray) -> None:
        """Text shards: the words their token ids index and those words' vectors (``/vocabulary``)."""
        assert self._file is not None, "use ShardWriter as a context manager"
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise ValueError(f"{len(words)} words but vectors of shape {vectors.shape}")
        table = self._file.create_group("vocabulary")
        table.create_dataset("words", data=np.array(words, dtype=object), dtype=STR)
        table.create_dataset("vectors", data=vectors)

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


# --- parts: one finished video each, until the shard file is assembled ---------------------------

DATA_KEY = "data"
FIELD_PREFIX = "data:"  # text: one array per TEXT_FIELDS entry
ATTR_PREFIX = "attr:"
META_PREFIX = "meta:"


@dataclass(frozen=True)
class Part:
    data: np.ndarray | dict[str, np.ndarray]
    attrs: dict[str, Any]   # what becomes the /videos/<video_id> attributes
    meta: dict[str, Any]    # what a rerun checks before trusting the part (fingerprint, source, ...)


def _scalar(array: np.ndarray) -> Any:
    return array.item() if array.ndim == 0 else array


def write_part(path: str | Path, data: np.ndarray | Mapping[str, np.ndarray],
               attrs: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None) -> Path:
    """Write one video's features, attributes and checks as an ``.npz``, atomically (temp + rename)."""
    arrays: dict[str, np.ndarray] = {}
    if isinstance(data, Mapping):
        arrays.update({FIELD_PREFIX + name: np.asarray(value) for name, value in data.items()})
    else:
        arrays[DATA_KEY] = np.asarray(data)
    # attribute values as HDF5 will get them (None -> "null", mappings -> JSON): no pickles needed
    arrays.update({ATTR_PREFIX + key: np.asarray(_attr_value(value)) for key, value in (attrs or {}).items()})
    arrays.update({META_PREFIX + key: np.asarray(_attr_value(value)) for key, value in (meta or {}).items()})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append .npz to a name
            np.savez(handle, **arrays)
    return Path(path)


def read_part(path: str | Path) -> Part:
    """Read a part back; every array is read in full (a damaged file raises here)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    fields = {name[len(FIELD_PREFIX):]: value for name, value in arrays.items() if name.startswith(FIELD_PREFIX)}
    if DATA_KEY in arrays:
        data: np.ndarray | dict[str, np.ndarray] = arrays[DATA_KEY]
    elif fields:
        data = fields
    else:
        raise ValueError(f"{path}: a part without data")
    attrs = {name[len(ATTR_PREFIX):]: _scalar(value) for name, value in arrays.items() if name.startswith(ATTR_PREFIX)}
    meta = {name[len(META_PREFIX):]: _scalar(value) for name, value in arrays.items() if name.startswith(META_PREFIX)}
    return Part(data, attrs, meta)


def feature_length(modality: str, data: np.ndarray | Mapping[str, np.ndarray]) -> int:
    """What ``/index/length`` records: rows (video), frames (audio, axis 1) or captions (text)."""
    if isinstance(data, Mapping):
        return int(len(data["start"]))
    return int(data.shape[0] if modality == "video" else data.shape[1])


def source_identity(path: str | Path) -> dict[str, Any]:
    """What identifies the input file a part was computed from (its path, size and mtime)."""
    stat = os.stat(path)
    return {"source_path": str(path), "source_size": int(stat.st_size), "source_mtime_ns": int(stat.st_mtime_ns)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def parts_fingerprint(modality: str, attrs: Mapping[str, Any], inputs: Sequence[Mapping[str, Any]]) -> str:
    """A digest of everything the parts of a shard depend on: the shard file's root attributes (the
    settings and how they ran) and the input rows (e.g. the normalize ledger)."""
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "mcnflow_version": __version__,
                "modality": modality, "attrs": _jsonable(attrs), "inputs": _jsonable(list(inputs))}
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def part_row_trusted(run: Any, video_id: str, row: Mapping[str, str], modality: str, *, fingerprint: str,
                     source: str | Path | None) -> bool:
    """Whether a resumed feature shard may keep an earlier journal row (ShardRun's ``trust``): an
    ``error`` row is tried again (its cause may have passed, e.g. a killed decoder), another failure
    stands, and an ``ok`` row stands only while its part is intact and made the same way."""
    if row["status"] == "error":
        return False
    if row["status"] != "ok":
        return True
    problems = part_problems(run.part_path(video_id), modality, fingerprint=fingerprint, source=source,
                             length=row["length"])
    if problems:
        logging.getLogger(__name__).info("%s: extracting again: %s", video_id, "; ".join(problems))
    return not problems


def part_problems(path: str | Path, modality: str, *, fingerprint: str, source: str | Path | None = None,
                  length: int | str | None = None) -> list[str]:
    """Why a part left by an earlier run cannot be trusted (empty list: it can)."""
    path = Path(path)
    if not path.is_file():
        return [f"{path.name} is missing"]
    try:
        part = read_part(path)
    except Exception as exc:  # noqa: BLE001 - any damage means: compute the video again
        return [f"{path.name} is unreadable ({type(exc).__name__}: {exc})"]
    problems = []
    if part.meta.get("fingerprint") != fingerprint:
        problems.append(f"{path.name} was made with other settings or inputs")
    if length is not None and feature_length(modality, part.data) != int(length):
        problems.append(f"{path.name} holds {feature_length(modality, part.data)} entries, the journal says {length}")
    if source is not None:
        try:
            now = source_identity(source)
        except OSError as exc:
            problems.append(f"source {source}: {exc}")
        else:
            then = {key: part.meta.get(key) for key in now}
            if then != now:
                problems.append(f"source {source} changed since {path.name} was made")
    return problems


def assemble_shard(path: str | Path, modality: str, corpus: str, shard: int,
                   entries: Iterable[tuple[str, str, str | Path | None]], attrs: Mapping[str, Any] | None = None,
                   compression: str | None = None) -> Path:
    """Write the shard file from ``(video_id, status, part or None)`` entries, in that order
    (through :class:`ShardWriter`: temporary name, ``complete`` set last, then renamed)."""
    with ShardWriter(path, modality, corpus, shard, attrs, compression=compression) as writer:
        for video_id, status, part in entries:
            if part is None:
                writer.mark(video_id, status)
            else:
                writer.add_part(video_id, part, status=status)
    return Path(path)


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

    def word_table(self) -> tuple[list[str], np.ndarray]:
        """A text shard's words and their float32 vectors (what its token ids index)."""
        table = self._open()["vocabulary"]
        return [str(w) for w in table["words"].asstr()[()]], table["vectors"][()]

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
