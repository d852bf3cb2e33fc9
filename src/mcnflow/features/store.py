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

Training and evaluation read through :class:`FeatureIndex` and a :class:`ShardFiles` of each process:
a bounded set of open shard files (``training.max_open_files`` descriptors per loader process), each
memory-mapped so a video's contiguous datasets are read as array views, with no h5py call per read.

A resumable extractor keeps each finished video in its own *part* (:func:`write_part`, an ``.npz``
in the shard's work directory, see mcnflow.core.shard_stage) and builds the shard file from the
parts at the end (:func:`assemble_shard`); parts are never read by training or evaluation.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import mmap
import os
import resource
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from mcnflow import __version__
from mcnflow.core.atomic import atomic_path, commit, temp_path_for
from mcnflow.core.status import FeatureStatus
from mcnflow.core.streams import FeatureStream

FORMAT = "mcnflow-features"
FORMAT_VERSION = 1
MODALITIES = ("video", "audio", "text")
TEXT_FIELDS = ("token_ids", "offsets", "start", "end")
STR = h5py.string_dtype(encoding="utf-8")


class IncompleteShardError(RuntimeError):
    """The file was not completely written (its writer was killed) or is not an mcnflow shard."""


class OpenFilesLimitError(OSError):
    """The process ran out of file descriptors (EMFILE) opening a shard; the shard itself may be fine."""


# An open shard holds h5py's descriptor and its memory map's (Python's mmap keeps a dup of it).
DESCRIPTORS_PER_FILE = 2


def out_of_descriptors(exc: BaseException) -> bool:
    """Whether ``exc`` is EMFILE (h5py's OSError says "Too many open files" in its text)."""
    return getattr(exc, "errno", None) == errno.EMFILE or "Too many open files" in str(exc)


def descriptor_limits() -> tuple[int, int]:
    """This process's (soft, hard) RLIMIT_NOFILE."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _limit_text(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def open_failure(path: str | Path, exc: OSError, setting: str | None = None,
                 max_open_files: int | None = None) -> Exception:
    """The error to raise when opening shard ``path`` failed with ``exc``: OpenFilesLimitError for EMFILE
    (naming the limit and the setting that bounds what mcnflow keeps open), else IncompleteShardError."""
    if not out_of_descriptors(exc):
        return IncompleteShardError(f"{path}: cannot be opened as HDF5 ({exc})")
    soft, hard = descriptor_limits()
    if setting is None:
        kept = "every feature shard it reads stays open"
    elif max_open_files is None:
        kept = f"{setting} is null, so every feature shard it reads stays open"
    else:
        kept = (f"{setting} = {max_open_files} lets it keep that many open for feature shards "
                f"({DESCRIPTORS_PER_FILE} per shard), besides those Python, torch and the DataLoader hold")
    advice = f"lower {setting} well below the limit, or raise" if setting else "raise"
    return OpenFilesLimitError(
        errno.EMFILE,
        f"{path}: too many open files (errno {errno.EMFILE}, EMFILE): this process may hold {_limit_text(soft)} "
        f"file descriptors (soft limit RLIMIT_NOFILE, `ulimit -n`; hard limit {_limit_text(hard)}) and {kept}. "
        f"The shard itself is not at fault: {advice} the limit (`ulimit -n`, up to the hard limit).")


def raise_descriptor_limit() -> tuple[int, int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit where the OS allows (DataLoader
    workers inherit it). Returns (soft before, soft after, hard)."""
    soft, hard = descriptor_limits()
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # e.g. macOS refuses an unlimited soft limit: keep the current one
            pass
    return soft, descriptor_limits()[0], hard


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
            self._file = open_shard(self.path)
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


def check_rate(paths: Iterable[str | Path], stream: FeatureStream, user: str) -> None:
    """Clips are cut assuming each stream's fixed rate (mcnflow.core.streams: 1 video row / s, 1.5 3D
    rows / s, 100 log-mel frames / s): refuse shards whose extractor recorded another value of the
    stream's rate attribute (``fps``, ``rows_per_second``, ``hop_ms``)."""
    key, expected = stream.rate_attr, stream.rate_attr_value
    if key is None:
        return
    for path in paths:
        reader = ShardReader(path)
        try:
            value = reader.attrs.get(key)
        finally:
            reader.close()
        if isinstance(value, (int, float, np.number)) and float(value) != expected:
            raise ValueError(f"{path}: {key}={value}; {user} cuts clips assuming {key}={expected:g}")


def open_shard(path: str | Path, setting: str | None = None, max_open_files: int | None = None) -> h5py.File:
    """Open a complete shard file read-only; IncompleteShardError if it is not one, OpenFilesLimitError
    when the process is out of descriptors (see :func:`open_failure`)."""
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise open_failure(path, exc, setting, max_open_files) from exc
    if handle.attrs.get("format") != FORMAT or not bool(handle.attrs.get("complete", False)):
        handle.close()
        raise IncompleteShardError(f"{path}: not a complete {FORMAT} file")
    return handle


def is_complete(path: str | Path) -> bool:
    """True when ``path`` is a finished shard file (what a rerun may trust). Running out of descriptors
    raises OpenFilesLimitError rather than calling a good shard incomplete."""
    try:
        with h5py.File(path, "r") as handle:
            return handle.attrs.get("format") == FORMAT and bool(handle.attrs.get("complete", False))
    except (OSError, FileNotFoundError) as exc:
        if out_of_descriptors(exc):
            raise open_failure(path, exc) from exc
        return False


class _MappedShard:
    """One open shard file: its HDF5 file id (to find datasets) and a map of the whole file (to read them)."""

    def __init__(self, path: str, files: "ShardFiles"):
        # The low-level open and close cost about half of h5py.File's (dataset ids are never kept, so
        # closing the file id releases the file).
        try:
            self.id = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY)
        except OSError as exc:
            raise open_failure(path, exc, files.setting, files.max_open_files) from exc
        try:
            if path not in files.checked:  # once per process: a shard is only ever replaced by a complete one
                attrs = h5py.File(self.id).attrs
                if attrs.get("format") != FORMAT or not bool(attrs.get("complete", False)):
                    raise IncompleteShardError(f"{path}: not a complete {FORMAT} file")
                files.checked.add(path)
            # MAP_PRIVATE with write access: arrays on it are writable (torch.from_numpy takes them
            # silently), and a write changes this process's copy of the page, never the file.
            self.map = mmap.mmap(self.id.get_vfd_handle(), 0, flags=mmap.MAP_PRIVATE,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            self.id.close()
            raise open_failure(path, exc, files.setting, files.max_open_files) from exc
        except BaseException:
            self.id.close()
            raise
        self.tables: dict[str, np.ndarray] = {}

    def close(self) -> None:
        # Arrays still viewing the map keep it alive; it is unmapped when the last one goes.
        self.map = None
        self.tables.clear()
        self.id.close()


class ShardFiles:
    """The shard files one process has open: at most ``max_open_files`` descriptors, the least recently
    used file closed first (None: no bound, every file stays open).

    A contiguous dataset (the layout ShardWriter writes without compression) is read as a view of the
    file's memory map: no h5py call per read, no copy, and only the pages used are read. Chunked
    (compressed) datasets are read through h5py. Each process opens its own files: pickling (a
    DataLoader worker) drops them, and nothing may be open when workers are forked.
    """

    def __init__(self, max_open_files: int | None = None, setting: str | None = None):
        if max_open_files is not None and max_open_files < DESCRIPTORS_PER_FILE:
            raise ValueError(f"{setting or 'max_open_files'} is {max_open_files}: an open shard takes "
                             f"{DESCRIPTORS_PER_FILE} file descriptors")
        self.max_open_files = max_open_files
        self.setting = setting
        self._open: OrderedDict[str, _MappedShard] = OrderedDict()
        self.checked: set[str] = set()  # paths found complete by this process
        self.opened = 0  # files opened so far: how often the bound made a file be reopened

    def __getstate__(self) -> dict:
        return {"max_open_files": self.max_open_files, "setting": self.setting, "_open": OrderedDict(),
                "checked": set(), "opened": 0}

    def __len__(self) -> int:
        return len(self._open)

    def _file(self, path: str | Path) -> _MappedShard:
        key = str(path)
        entry = self._open.get(key)
        if entry is not None:
            self._open.move_to_end(key)
            return entry
        if self.max_open_files is not None:
            while self._open and (len(self._open) + 1) * DESCRIPTORS_PER_FILE > self.max_open_files:
                self._open.popitem(last=False)[1].close()
        entry = _MappedShard(key, self)
        self._open[key] = entry
        self.opened += 1
        return entry

    def _view(self, entry: _MappedShard, dataset: h5py.h5d.DatasetID) -> np.ndarray:
        shape, dtype = tuple(dataset.shape), dataset.dtype
        count = int(np.prod(shape, dtype=np.int64))
        offset = dataset.get_offset()  # None unless contiguous and allocated
        if offset is None:
            if count == 0:
                return np.empty(shape, dtype)
            return h5py.Dataset(dataset)[()]  # chunked (compressed): h5py decodes it
        return np.frombuffer(entry.map, dtype=dtype, count=count, offset=offset).reshape(shape)

    def read(self, path: str | Path, name: str) -> np.ndarray | dict[str, np.ndarray]:
        """The dataset ``name`` of shard ``path`` as an array, or a text video's group as a dict of
        TEXT_FIELDS arrays; views of the file where the layout allows (do not keep them for long: each
        keeps its file mapped). The kernel's own read-ahead serves a cold page cache: asking for the
        whole dataset ahead (MADV_WILLNEED) was measured to cost more CPU than it saved."""
        entry = self._file(path)
        node = h5py.h5o.open(entry.id, name.encode())
        if isinstance(node, h5py.h5g.GroupID):
            return {field: self._view(entry, h5py.h5o.open(node, field.encode())) for field in TEXT_FIELDS}
        return self._view(entry, node)

    def table(self, path: str | Path, name: str) -> np.ndarray:
        """A dataset read by scattered rows, e.g. a text shard's word vectors: located once per open
        file. (Telling the kernel the rows are random, MADV_RANDOM, was measured ~8% slower cold: the
        frequent words come first in a shard's table, so reading ahead around a row pays.)"""
        entry = self._file(path)
        array = entry.tables.get(name)
        if array is None:
            array = entry.tables[name] = self._view(entry, h5py.h5o.open(entry.id, name.encode()))
        return array

    def close(self) -> None:
        while self._open:
            self._open.popitem(last=False)[1].close()


class FeatureIndex:
    """video_id -> shard over many shard files of one modality.

    ``files``: the open files of this process, shared by the indexes of one reader (e.g. every modality
    of a training set) so one bound covers them all; by default the index has its own, unbounded.
    """

    def __init__(self, paths: Iterable[str | Path], files: ShardFiles | None = None):
        self.files = files if files is not None else ShardFiles()
        self.readers = [ShardReader(p) for p in paths]
        self._where: dict[str, ShardReader] = {}
        self.status: dict[str, str] = {}
        for reader in self.readers:
            try:
                for row in reader.index():
                    self.status[row["video_id"]] = row["status"]
                    if row["status"] == "ok":
                        self._where[row["video_id"]] = reader
            except OpenFilesLimitError as exc:
                raise open_failure(reader.path, exc, self.files.setting, self.files.max_open_files) from exc
            finally:
                reader.close()  # one file at a time here; reads reopen through self.files

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._where

    def video_ids(self) -> list[str]:
        return list(self._where)

    def view(self, video_id: str) -> np.ndarray | dict[str, np.ndarray]:
        """The video's features as views of the mapped file where possible (see ShardFiles.read)."""
        return self.files.read(self._where[video_id].path, f"videos/{video_id}")

    def read(self, video_id: str):
        """The video's features as arrays of their own."""
        data = self.view(video_id)
        if isinstance(data, dict):
            return {field: np.array(value) for field, value in data.items()}
        return np.array(data)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()
        self.files.close()
