"""HowTo100M: ``HowTo100M_v1.csv`` (video_id,category_1,category_2,rank,task_id) and
``caption.json`` / ``raw_caption.json`` ({video_id: {"start": [...], "end": [...], "text": [...]}})."""

from __future__ import annotations

import csv
import json

from .base import Caption, Corpus, CorpusError

CSV_COLUMNS = ("video_id", "category_1", "category_2", "rank", "task_id")


class HowTo100M(Corpus):
    def __init__(self, name: str, spec: dict, base_dir: str = "."):
        super().__init__(name, spec, base_dir)
        self._captions: dict | None = None
        self._rows: dict[str, dict] = {}

    def _read_video_ids(self) -> list[str]:
        path = self.require("videos_csv")
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise CorpusError(f"{path}: missing column(s) {missing}; expected {','.join(CSV_COLUMNS)}")
            ids = []
            for row in reader:
                ids.append(row["video_id"].strip())
                self._rows.setdefault(ids[-1], row)
        return ids

    def metadata(self, video_id: str) -> dict:
        self.video_ids()
        return self._rows.get(video_id, {})

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
