"""What every corpus reader provides."""

from __future__ import annotations

import abc
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from mcnflow.core.ids import ID_KINDS

log = logging.getLogger(__name__)


class CorpusError(ValueError):
    """A corpus file is missing or not in the expected format."""


@dataclass(frozen=True)
class Caption:
    """One narration line (HowTo100M ASR) or annotated sentence, in seconds from the video start."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Segment:
    """An evaluation query: ``sentence`` describes ``[start, end]`` of ``video_id``.

    ``end`` is ``math.inf`` when the sentence describes the whole clip (MSR-VTT).
    """

    video_id: str
    start: float
    end: float
    sentence: str
    segment_id: str


WHOLE_CLIP = math.inf


class Corpus(abc.ABC):
    """Base reader. Subclasses implement ``_read_video_ids`` and ``captions``."""

    def __init__(self, name: str, spec: dict, base_dir: str = "."):
        self.name = name
        self.spec = spec
        self.base_dir = Path(base_dir)
        self.id_kind = spec.get("id_kind", "youtube")
        self._ids: list[str] | None = None
        self.rejected: list[tuple[str, str]] = []  # (raw id, reason): reported by the manifest stage

    def path(self, key: str) -> Path:
        """A path from the spec, relative to the base directory unless absolute."""
        value = self.spec.get(key)
        if not value:
            raise CorpusError(f"corpora.{self.name}.{key} is not set")
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else self.base_dir / path

    def require(self, key: str) -> Path:
        path = self.path(key)
        if not path.exists():
            raise CorpusError(f"corpora.{self.name}.{key}: file not found: {path}")
        return path

    @abc.abstractmethod
    def _read_video_ids(self) -> list[str]:
        """Raw ids in file order (validated by :meth:`video_ids`)."""

    def video_ids(self) -> list[str]:
        """Valid ids in file order, duplicates dropped, ``limit`` applied; invalid ones kept in ``rejected``."""
        if self._ids is None:
            seen: set[str] = set()
            ids: list[str] = []
            valid = ID_KINDS[self.id_kind].match  # bound once: this loop runs 1.2M times for HowTo100M
            for raw in self._read_video_ids():
                if raw in seen:
                    continue
                seen.add(raw)
                if not valid(raw):
                    self.rejected.append((raw, f"not a valid {self.id_kind} video id"))
                    continue
                ids.append(raw)
            limit = self.spec.get("limit")
            self._ids = ids[:limit] if limit else ids
            if self.rejected:
                log.warning("%s: %d invalid video id(s) skipped, e.g. %r", self.name, len(self.rejected),
                            self.rejected[0][0])
        return self._ids

    def source(self, video_id: str) -> str:
        if self.spec["source"] == "url":
            return self.spec["url_template"].format(video_id=video_id)
        ext = self.spec.get("video_ext", "mp4")
        return str(self.path("video_dir") / f"{video_id}.{ext}")

    @abc.abstractmethod
    def captions(self, video_id: str) -> list[Caption]:
        """Narration (training corpora) or annotated sentences (evaluation corpora) of one video."""

    def segments(self) -> list[Segment]:
        """Evaluation queries; corpora without annotations have none."""
        return []
