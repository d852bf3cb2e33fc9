"""CrossTask (Zhukov et al., CVPR 2019): the test videos and their tasks' steps, for step localization.

Spec keys: ``videos`` (CrossTask's ``videos.csv``: ``task,video_id,url`` lines without a header, or
a csv whose header names ``task`` and ``video_id``, as MCN's ``cvpr19_test.csv``), ``steps``
(``tasks_primary.txt`` blocks, or a JSON ``{task: [step, ...]}``) and ``annotations`` (a folder of
``<task>_<video_id>.csv`` / ``.npy`` step annotations, read by :mod:`mcnflow.evaluation.crosstask`).
A video's captions are its task's step descriptions, so the vocabulary covers every step query.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from mcnflow.corpora.base import WHOLE_CLIP, Caption, Corpus


class CrossTaskError(ValueError):
    """A CrossTask file is missing or not in one of the accepted formats."""


@dataclass(frozen=True)
class CrossTaskVideo:
    task: str
    video_id: str


def read_videos(path: str | Path) -> list[CrossTaskVideo]:
    """The test videos, in file order (see module doc for the two accepted csv forms)."""
    path = Path(path)
    if not path.is_file():
        raise CrossTaskError(f"crosstask videos: file not found: {path}")
    with open(path, encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip() for cell in rows[0]]
    has_header = "task" in header and "video_id" in header
    task_col, video_col = (header.index("task"), header.index("video_id")) if has_header else (0, 1)
    videos = []
    for number, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if len(row) <= max(task_col, video_col):
            raise CrossTaskError(f"{path}: line {number}: expected task and video_id columns, got {row}")
        videos.append(CrossTaskVideo(row[task_col].strip(), row[video_col].strip()))
    return videos


def read_steps(path: str | Path) -> dict[str, list[str]]:
    """task -> its ordered step descriptions (``tasks_primary.txt`` blocks or a JSON object)."""
    path = Path(path)
    if not path.is_file():
        raise CrossTaskError(f"crosstask steps: file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        if not all(isinstance(v, list) for v in data.values()):
            raise CrossTaskError(f"{path}: expected {{task: [step, ...]}}")
        return {str(task): [str(s) for s in steps] for task, steps in data.items()}
    lines = [line.strip() for line in text.splitlines()]
    steps: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        block = lines[i:i + 5]
        if len(block) < 5:
            raise CrossTaskError(f"{path}: line {i + 1}: incomplete task block (id, title, url, n_steps, steps)")
        task, _title, _url, n_steps, step_line = block
        try:
            expected = int(n_steps)
        except ValueError:
            raise CrossTaskError(f"{path}: line {i + 4}: number of steps {n_steps!r} is not an integer") from None
        names = [s.strip() for s in step_line.split(",")]
        if len(names) != expected:
            raise CrossTaskError(f"{path}: task {task}: {expected} steps announced, {len(names)} listed")
        steps[task] = names
        i += 5
    return steps


class CrossTask(Corpus):
    def __init__(self, name: str, spec: dict, base_dir: str = "."):
        super().__init__(name, spec, base_dir)
        self._videos: list[CrossTaskVideo] | None = None
        self._steps: dict[str, list[str]] | None = None

    def videos(self) -> list[CrossTaskVideo]:
        if self._videos is None:
            self._videos = read_videos(self.require("videos"))
        return self._videos

    def steps(self) -> dict[str, list[str]]:
        if self._steps is None:
            self._steps = read_steps(self.require("steps"))
        return self._steps

    def _read_video_ids(self) -> list[str]:
        return [video.video_id for video in self.videos()]

    def captions(self, video_id: str) -> list[Caption]:
        tasks = [video.task for video in self.videos() if video.video_id == video_id]
        steps = self.steps().get(tasks[0], []) if tasks else []
        return [Caption(0.0, WHOLE_CLIP, step) for step in steps]

    def evaluation_files(self) -> dict[str, str]:
        """The three paths evaluation needs, resolved against the base directory."""
        return {key: str(self.path(key)) for key in ("videos", "steps", "annotations")}
