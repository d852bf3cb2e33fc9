"""Write files so that a killed job never leaves a partial file a rerun would trust.

Everything is written next to its destination under a ``.tmp-`` name and renamed when complete
(``os.replace`` is atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import os
import shutil
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
DIR_MODE = 0o777 & ~_umask()


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


@contextlib.contextmanager
def atomic_directory(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory to fill; on success it replaces ``final`` as a whole (every
    file fsynced first), on error it is removed. A killed writer leaves only a ``.tmp-`` directory."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}.", dir=final.parent))
    try:
        yield tmp
        for path in tmp.iterdir():
            fsync_path(path)
            os.chmod(path, FILE_MODE)
        os.chmod(tmp, DIR_MODE)
        if final.exists():
            # a directory cannot be renamed over a non-empty one: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}.old.", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temp_dirs(final: str | Path) -> int:
    """Delete the ``.tmp-`` directories killed :func:`atomic_directory` writers of ``final`` left."""
    final = Path(final)
    removed = 0
    for path in final.parent.glob(f"{TMP_PREFIX}{final.name}.*") if final.parent.is_dir() else ():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed
