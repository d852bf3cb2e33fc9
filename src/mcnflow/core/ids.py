"""Video ID validation: an ID becomes a file name and a URL, so it is checked before either."""

from __future__ import annotations

import re

# YouTube IDs: exactly 11 characters of the URL-safe base64 alphabet.
YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
# Local corpora (MSR-VTT "video7020", the demo corpus): a safe file-name stem, no dots or slashes.
LOCAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")

ID_KINDS = {"youtube": YOUTUBE_ID, "local": LOCAL_ID}


class InvalidVideoId(ValueError):
    """The ID would be unsafe as a path component or command argument."""


def validate_video_id(video_id: str, kind: str = "youtube") -> str:
    """Return ``video_id`` unchanged if it matches the ``kind`` pattern, else raise InvalidVideoId."""
    try:
        pattern = ID_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown id kind {kind!r}; allowed: {', '.join(ID_KINDS)}") from None
    if not isinstance(video_id, str) or not pattern.match(video_id):
        raise InvalidVideoId(f"invalid {kind} video id {video_id!r} (expected {pattern.pattern})")
    return video_id


def is_valid_video_id(video_id: str, kind: str = "youtube") -> bool:
    try:
        validate_video_id(video_id, kind)
    except InvalidVideoId:
        return False
    return True
