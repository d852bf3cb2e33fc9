"""MSR-VTT 1k-A test split: ``MSRVTT_JSFUSION_test.csv`` (``key;vid_key;video_id;sentence``), one
sentence per test clip; the videos come from a local folder (MSR-VTT ships as a zip of mp4 files)."""

from __future__ import annotations

import csv

from mcnflow.corpora.base import WHOLE_CLIP, Caption, Corpus, CorpusError, Segment

CSV_COLUMNS = ("key", "vid_key", "video_id", "sentence")


class MSRVTT(Corpus):
    def __init__(self, name: str, spec: dict, base_dir: str = "."):
        super().__init__(name, spec, base_dir)
        self._rows: list[dict] | None = None

    def rows(self) -> list[dict]:
        if self._rows is None:
            path = self.require("csv")
            with open(path, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle, delimiter=";")
                if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
                    raise CorpusError(f"{path}: header {reader.fieldnames}; expected {';'.join(CSV_COLUMNS)}")
                self._rows = [row for row in reader]
        return self._rows

    def _read_video_ids(self) -> list[str]:
        return [row["video_id"].strip() for row in self.rows()]

    def captions(self, video_id: str) -> list[Caption]:
        return [Caption(0.0, WHOLE_CLIP, row["sentence"]) for row in self.rows() if row["video_id"] == video_id]

    def segments(self) -> list[Segment]:
        keep = set(self.video_ids())
        return [Segment(row["video_id"], 0.0, WHOLE_CLIP, row["sentence"], row["key"])
                for row in self.rows() if row["video_id"] in keep]
