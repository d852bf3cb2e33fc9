"""Stable shard assignment: the i-th valid video of a corpus (file order) goes to shard i // shard_size.

The shard count is derived cheaply from the corpus file when the workflow is planned, so the DAG is
static (no checkpoints) and has one job per shard per stage, never one per video.
"""

from __future__ import annotations

import math


def shard_of(position: int, shard_size: int) -> int:
    return position // shard_size


def shard_count(n_videos: int, shard_size: int) -> int:
    return max(1, math.ceil(n_videos / shard_size))


def shard_name(shard: int | str) -> str:
    """Shards are named by a 5-digit number in paths and wildcards ("00042")."""
    return f"{int(shard):05d}"


def shard_names(n_videos: int, shard_size: int) -> list[str]:
    return [shard_name(i) for i in range(shard_count(n_videos, shard_size))]
