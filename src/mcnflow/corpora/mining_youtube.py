"""Mining YouTube (Kuehne, Iqbal, Richard, Gall 2019; github.com/hildekuehne/Mining_YouTube_dataset):
the 250 densely annotated test videos of five egg dishes, for step localization as MCN evaluates it.

Release format (the repository's ``test/``):

- ``videos``: ``videos_test.txt``, one YouTube id per line (``videos_val.txt`` lists 25 of them);
- ``annotations``: the folder unpacked from ``test/annotations.tar.gz``, one SubRip file per video,
  ``<video_id>.srt``: numbered blocks of ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` and one action label of
  the dataset's dictionary (``verb_object[_detail]``, e.g. ``add_chilis_green``); UTF-8, a BOM and
  CRLF line ends are accepted. Only actions are listed: the time between them is background.

A video's *steps* are its annotated segments in time order (the dataset's transcript: an action done
twice is two steps); a step's sentence is its label with ``_`` read as a space (``add chilis green``).
The captions of a video are its steps (so text extraction covers every query word).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mcnflow.corpora.base import Caption, Corpus, CorpusError

_TIME = r"(\d+):(\d{2}):(\d{2})[,.](\d{1,3})"
TIME_LINE = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}\s*$")


@dataclass(frozen=True)
class MiningStep:
    """One annotated action segment: ``label`` over ``[start, end]`` seconds."""

    label: str
    start: float
    end: float

    @property
    def sentence(self) -> str:
        return label_sentence(self.label)


def label_sentence(label: str) -> str:
    """``add_chilis_green`` -> ``add chilis green`` (the query sentence of a step)."""
    return " ".join(label.replace("_", " ").split())


def _seconds(hours: str, minutes: str, seconds: str, millis: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000.0


def read_video_list(path: str | Path) -> list[str]:
    """The ids of ``videos_test.txt`` / ``videos_val.txt``, in file order (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"mining_youtube videos: file not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def read_srt(path: str | Path) -> list[MiningStep]:
    """The annotated segments of one ``.srt`` file, sorted by start time (stable)."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"mining_youtube annotation: file not found: {path}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    steps: list[MiningStep] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        first = i
        if not lines[i].strip().isdigit():
            raise CorpusError(f"{path}: line {i + 1}: expected a subtitle number, got {lines[i].strip()!r}")
        i += 1
        match = TIME_LINE.match(lines[i]) if i < len(lines) else None
        if match is None:
            got = lines[i].strip() if i < len(lines) else "end of file"
            raise CorpusError(f"{path}: line {i + 1}: expected 'HH:MM:SS,mmm --> HH:MM:SS,mmm', got {got!r}")
        groups = match.groups()
        start, end = _seconds(*groups[:4]), _seconds(*groups[4:])
        i += 1
        label_lines = []
        while i < len(lines) and lines[i].strip():
            label_lines.append(lines[i].strip())
            i += 1
        label = " ".join(label_lines)
        if not label:
            raise CorpusError(f"{path}: line {first + 1}: subtitle without a label")
        if end < start:
            raise CorpusError(f"{path}: line {first + 2}: segment ends ({end}) before it starts ({start})")
        steps.append(MiningStep(label, start, end))
    return sorted(steps, key=lambda step: step.start)


class MiningYouTube(Corpus):
    """Spec keys: ``videos`` (the id list) and ``annotations`` (the folder of ``<video_id>.srt``)."""

    def __init__(self, name: str, spec: dict, base_dir: str = "."):
        super().__init__(name, spec, base_dir)
        self._steps: dict[str, list[MiningStep]] = {}

    def _read_video_ids(self) -> list[str]:
        return read_video_list(self.require("videos"))

    def annotation_path(self, video_id: str) -> Path:
        return self.path("annotations") / f"{video_id}.srt"

    def steps(self, video_id: str) -> list[MiningStep]:
        """The video's annotated steps in time order (CorpusError when its .srt is missing or malformed)."""
        if video_id not in self._steps:
            self._steps[video_id] = read_srt(self.annotation_path(video_id))
        return self._steps[video_id]

    def captions(self, video_id: str) -> list[Caption]:
        return [Caption(step.start, step.end, step.sentence) for step in self.steps(video_id)]

    def evaluation_files(self) -> dict[str, str]:
        """The two paths evaluation needs, resolved against the base directory."""
        return {key: str(self.path(key)) for key in ("videos", "annotations")}
