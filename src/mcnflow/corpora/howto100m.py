"""HowTo100M: ``HowTo100M_v1.csv`` (video_id,category_1,category_2,rank,task_id) and
``caption.json`` / ``raw_caption.json`` ({video_id: {"start": [...], "end": [...], "text": [...]}})."""

from __future__ import annotations

import csv
import json

from mcnflow.corpora.base import Caption, Corpus, CorpusError

CSV_COLUMNS = ("video_id", "category_1", "category_2", "rank", "task_id")


class HowTo100M(Corpus):
    def __init__(self, name: str, spec: dict, base_dir: str = "."):
        super().__init__(name, spec, base_dir)
        self._captions: dict | None = None

    def _rows(self):
        """(header, rows) of the CSV; rows are lists, which keeps a 1.2M-row read to a few seconds."""
        path = self.require("videos_csv")
        handle = open(path, encoding="utf-8", newline="")
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            handle.close()
            raise CorpusError(f"{path}: missing column(s) {missing}; expected {','.join(CSV_COLUMNS)}")
        return handle, header, reader

    def _read_video_ids(self) -> list[str]:
        handle, header, reader = self._rows()
        column = header.index("video_id")
        with handle:
            return [row[column].strip() for row in reader if row]

    def metadata(self, video_id: str) -> dict:
        """The CSV row of one video (categories, search rank, task id)."""
        handle, header, reader = self._rows()
        column = header.index("video_id")
        with handle:
            for row in reader:
                if row and row[column].strip() == video_id:
                    return dict(zip(header, row))
        return {}

    def _load_captions(self) -> dict:
        # caption.json of the full dataset is large; it is read once per process and shared by all videos.
        if self._captions is None:
            path = self.require("captions")
            with open(path, encoding="utf-8") as handle:
                self._captions = json.load(handle)
            if not isinstance(self._captions, dict):
                raise CorpusError(f"{path}: expected a JSON object mapping video_id -> captions")
        return self._captions

    def captions(self, video_id: str) -> list[Caption]:
        entry = self._load_captions().get(video_id)
        if not entry:
            return []
        try:
            starts, ends, texts = entry["start"], entry["end"], entry["text"]
        except (KeyError, TypeError):
            raise CorpusError(f"{self.spec['captions']}: {video_id} lacks start/end/text lists") from None
        if not len(starts) == len(ends) == len(texts):
            raise CorpusError(f"{self.spec['captions']}: {video_id} has start/end/text of different lengths")
        return [Caption(float(s), float(e), str(t)) for s, e, t in zip(starts, ends, texts)]
