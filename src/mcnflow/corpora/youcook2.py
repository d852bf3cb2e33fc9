"""YouCook2: ``youcookii_annotations_trainval.json``
({"database": {vid: {"duration", "subset", "recipe_type", "video_url", "annotations": [{"segment": [s, e], "id", "sentence"}]}}}).

The evaluation clips are the annotated steps of the configured ``subset`` (MCN evaluates the
validation steps whose videos are not in HowTo100M: 3,350 clips)."""

from __future__ import annotations

import json

from mcnflow.corpora.base import Caption, Corpus, CorpusError, Segment


class YouCook2(Corpus):
    def __init__(self, name: str, spec: dict, base_dir: str = "."):
        super().__init__(name, spec, base_dir)
        self._database: dict | None = None

    def database(self) -> dict:
        if self._database is None:
            path = self.require("annotations")
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
            if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
                raise CorpusError(f"{path}: expected {{\"database\": {{video_id: {{...}}}}}}")
            self._database = data["database"]
        return self._database

    def _read_video_ids(self) -> list[str]:
        subset = self.spec.get("subset", "validation")
        return [vid for vid, entry in self.database().items() if entry.get("subset") == subset]

    def duration(self, video_id: str) -> float:
        return float(self.database()[video_id].get("duration", 0.0))

    def captions(self, video_id: str) -> list[Caption]:
        entry = self.database().get(video_id, {})
        return [Caption(float(a["segment"][0]), float(a["segment"][1]), str(a["sentence"]))
                for a in entry.get("annotations", [])]

    def segments(self) -> list[Segment]:
        segments = []
        for vid in self.video_ids():
            for index, ann in enumerate(self.database()[vid].get("annotations", [])):
                start, end = float(ann["segment"][0]), float(ann["segment"][1])
                segments.append(Segment(vid, start, end, str(ann["sentence"]), f"{vid}_{ann.get('id', index)}"))
        return segments
