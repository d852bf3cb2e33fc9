"""Reading video features as MCN feeds them: 2D (ResNet152, 1 row/s), 3D (ResNeXt-101, 1.5 rows/s), or both.

MCN's video input is the 2D and the 3D features of a clip, each max-pooled over the clip and
L2-normalised, then concatenated (4,096-d). :class:`VideoIndex` reads the configured streams of
every video (``training.video_features``); :func:`mcnflow.model.inputs.video_item` cuts and pools
them. A video counts as present only when every stream has it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mcnflow.core.streams import VIDEO_FEATURE_CHOICES, by_video_feature
from mcnflow.features.store import FeatureIndex, ShardFiles, check_rate


class VideoIndex:
    """video_id -> {stream: (rows, dim) features} over the shards of each stream, keyed by the
    ``training.video_features`` choice (2d, 3d; mcnflow.core.streams)."""

    def __init__(self, shards: Mapping[str, Sequence[str | Path]], user: str, files: ShardFiles | None = None):
        unknown = sorted(set(shards) - set(VIDEO_FEATURE_CHOICES))
        if unknown:
            raise ValueError(f"unknown video feature stream(s) {unknown}; allowed: {', '.join(VIDEO_FEATURE_CHOICES)}")
        self.streams = [s for s in VIDEO_FEATURE_CHOICES if s in shards]
        if not self.streams:
            raise ValueError("no video feature stream given")
        self.indexes: dict[str, FeatureIndex] = {}
        files = files if files is not None else ShardFiles()
        for stream in self.streams:
            if not shards[stream]:
                raise ValueError(f"{stream} video features are used but no {stream} shards were given")
            check_rate(shards[stream], by_video_feature(stream), user)
            self.indexes[stream] = FeatureIndex(shards[stream], files)
        self.readers = [r for index in self.indexes.values() for r in index.readers]
        # a video's status: ok when every stream has it, else the first stream's reason it is missing
        self.status: dict[str, str] = {}
        for stream in self.streams:
            for video_id, status in self.indexes[stream].status.items():
                if status != "ok":
                    self.status.setdefault(video_id, status if len(self.streams) == 1 else f"{stream}: {status}")
        for stream in self.streams:
            for video_id in self.indexes[stream].status:
                if video_id in self:
                    self.status[video_id] = "ok"
                else:
                    missing = [s for s in self.streams if video_id not in self.indexes[s].status]
                    if missing:
                        self.status.setdefault(video_id, f"{'/'.join(missing)}: not extracted")

    def __contains__(self, video_id: str) -> bool:
        return all(video_id in index for index in self.indexes.values())

    def video_ids(self) -> list[str]:
        return [v for v in self.indexes[self.streams[0]].video_ids() if v in self]

    def read(self, video_id: str) -> dict[str, np.ndarray]:
        return {stream: self.indexes[stream].read(video_id) for stream in self.streams}

    def view(self, video_id: str) -> dict[str, np.ndarray]:
        """Like ``read``, as views of the mapped files where possible (see ShardFiles.read)."""
        return {stream: self.indexes[stream].view(video_id) for stream in self.streams}

    def close(self) -> None:
        for index in self.indexes.values():
            index.close()
