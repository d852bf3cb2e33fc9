"""HowTo100M: ``HowTo100M_v1.csv`` (video_id,category_1,category_2,rank,task_id) and
``caption.json`` / ``raw_caption.json`` ({video_id: {"start": [...], "end": [...], "text": [...]}}).

caption.json is ~8 GB for 1.22M videos, so no job loads it: ``mcnflow split-captions``
(:mod:`mcnflow.caption_split`) streams it once (:meth:`HowTo100M.caption_entries`) into one
*caption shard* per manifest shard, and a per-shard job reads only its own (:meth:`HowTo100M.open_caption_shard`).

A caption shard (``results/captions/<corpus>/shard-NNNNN.jsonl``) is JSON Lines: a header
``{"format": "mcnflow-caption-shard", "format_version": 1, "corpus": ..., "shard": "NNNNN"}``, then one
``{"video_id": ..., "captions": <the video's caption.json entry, as it was>}`` per video of the shard
that caption.json has. Entries are copied unchecked; a bad one becomes that video's error when read.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterator

from mcnflow.corpora.base import Caption, Corpus, CorpusError

CSV_COLUMNS = ("video_id", "category_1", "category_2", "rank", "task_id")
CAPTION_SHARD_FORMAT = "mcnflow-caption-shard"
CAPTION_SHARD_VERSION = 1


def caption_shard_header(corpus: str, shard: str) -> dict[str, Any]:
    return {"format": CAPTION_SHARD_FORMAT, "format_version": CAPTION_SHARD_VERSION, "corpus": corpus,
            "shard": shard}


def entry_captions(video_id: str, entry: Any, origin: str) -> list[Caption]:
    """The captions of one caption.json entry; a malformed entry raises CorpusError naming the video."""
    if not entry:
        return []
    try:
        starts, ends, texts = entry["start"], entry["end"], entry["text"]
    except (KeyError, TypeError):
        raise CorpusError(f"{origin}: {video_id} lacks start/end/text lists") from None
    if not all(isinstance(values, list) for values in (starts, ends, texts)):
        raise CorpusError(f"{origin}: {video_id}: start, end and text must be lists")
    if not len(starts) == len(ends) == len(texts):
        raise CorpusError(f"{origin}: {video_id} has start/end/text of different lengths "
                          f"({len(starts)}/{len(ends)}/{len(texts)})")
    captions = []
    for index, (start, end, text) in enumerate(zip(starts, ends, texts)):
        try:
            times = float(start), float(end)
        except (TypeError, ValueError):
            raise CorpusError(f"{origin}: {video_id}: caption {index} has a non-numeric time "
                              f"(start {start!r}, end {end!r})") from None
        if not all(map(math.isfinite, times)):
            raise CorpusError(f"{origin}: {video_id}: caption {index} has a non-finite time {times}")
        captions.append(Caption(times[0], times[1], str(text)))
    return captions


def read_caption_shard(path: str | Path, corpus: str | None = None, shard: str | None = None) -> dict[str, Any]:
    """video_id -> caption.json entry of one caption shard (a later line of a video wins, as in json.load).
    ``corpus`` / ``shard``, when given, must be the ones the header names."""
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise CorpusError(f"caption shard {path}: cannot be read ({exc}); `mcnflow split-captions` makes it") from exc
    entries: dict[str, Any] = {}
    header = None
    with handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"caption shard {path} line {number}: not JSON ({exc})") from None
            if header is None:
                header = record
                if not isinstance(header, dict) or header.get("format") != CAPTION_SHARD_FORMAT:
                    raise CorpusError(f"caption shard {path}: not a {CAPTION_SHARD_FORMAT} file (its first line "
                                      "is not the header `mcnflow split-captions` writes)")
                for key, wanted in (("corpus", corpus), ("shard", shard)):
                    if wanted is not None and header.get(key) != wanted:
                        raise CorpusError(f"caption shard {path} is for {key} {header.get(key)!r}, not {wanted!r}")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("video_id"), str):
                raise CorpusError(f"caption shard {path} line {number}: expected {{\"video_id\": ..., \"captions\": ...}}")
            entries[record["video_id"]] = record.get("captions")
    if header is None:
        raise CorpusError(f"caption shard {path} is empty (no header line)")
    return entries


class HowTo100M(Corpus):
    def __init__(self, name: str, spec: dict, base_dir: str = "."):
        super().__init__(name, spec, base_dir)
        self._shard_captions: dict[str, Any] | None = None
        self._shard_path: Path | None = None

    def _read_video_ids(self) -> list[str]:
        """The CSV's ids; rows are read as lists, which keeps a 1.2M-row read to a few seconds."""
        path = self.require("videos_csv")
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise CorpusError(f"{path}: missing column(s) {missing}; expected {','.join(CSV_COLUMNS)}")
            column = header.index("video_id")
            return [row[column].strip() for row in reader if row]

    # --- captions ----------------------------------------------------------------------------

    def caption_entries(self) -> Iterator[tuple[str, Any]]:
        """(video_id, entry) of the caption file in file order, streamed: the document is never held in
        memory (ijson; entries are plain Python values, numbers as float/int)."""
        import ijson

        path = self.require("captions")
        with open(path, "rb") as handle:
            first = handle.read(1)
            while first.isspace():
                first = handle.read(1)
            if first != b"{":
                raise CorpusError(f"{path}: expected a JSON object mapping video_id -> captions")
            handle.seek(0)
            try:
                yield from ijson.kvitems(handle, "", use_float=True)
            except ijson.JSONError as exc:
                raise CorpusError(f"{path}: not valid JSON near byte {handle.tell()}: {exc}") from None

    def open_caption_shard(self, path: str | Path, shard: str | None = None) -> None:
        """Read captions from now on from one caption shard (the per-shard file of ``mcnflow split-captions``)."""
        self._shard_captions = read_caption_shard(path, self.name, shard)
        self._shard_path = Path(path)

    def captions(self, video_id: str) -> list[Caption]:
        """The video's captions, from the opened caption shard ([] when caption.json has none for it)."""
        if self._shard_captions is None:
            raise CorpusError(f"corpora.{self.name}: captions are read per shard; open the video's caption shard "
                              "(results/captions/<corpus>/shard-NNNNN.jsonl, made by `mcnflow split-captions`) first")
        return entry_captions(video_id, self._shard_captions.get(video_id), str(self._shard_path))
