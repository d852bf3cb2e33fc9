"""Write files so that a killed job never leaves a partial file a rerun would trust.

Everything is written next to its destination under a ``.tmp-`` name and renamed when complete
(``os.replace`` is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"


def temp_path_for(final: str | Path) -> Path:
    """A unique temporary sibling of ``final`` (same directory, so the rename is atomic)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{final.name}.", dir=final.parent)
    os.close(fd)
    return Path(name)


def fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates owner-only files; finished outputs get the usual umask-derived mode instead.
FILE_MODE = 0o666 & ~_umask()


def commit(tmp: str | Path, final: str | Path) -> Path:
    """Flush ``tmp`` to disk and rename it to ``final``."""
    fsync_path(tmp)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, final)
    return Path(final)


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``final``, on error it is removed."""
    tmp = temp_path_for(final)
    try:
        yield tmp
        commit(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(final: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Open a temporary file for writing; it replaces ``final`` only if the block completes."""
    with atomic_path(final) as tmp:
        kwargs = {"encoding": encoding} if "b" not in mode else {}
        with open(tmp, mode, **kwargs) as handle:
            yield handle


def remove_stale_temps(directory: str | Path) -> int:
    """Delete leftovers of killed writers in ``directory``; return how many were removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            path.unlink()
            removed += 1
    return removed
