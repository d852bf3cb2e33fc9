"""Helpers for the resume tests: an HDF5 shard as comparable plain data, and what a finished shard
job must not leave behind."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tolist())
    if isinstance(value, np.generic):
        return (type(value).__name__, value.item())
    return (type(value).__name__, value)


def _attrs(node) -> dict:
    return {key: _plain(value) for key, value in node.attrs.items()}


def h5_contents(path: str | Path) -> dict:
    """Everything a reader can see in a shard file (attributes with their types, every dataset with
    its dtype, shape, bytes and filters)."""
    contents: dict = {}

    def visit(name, node):
        if isinstance(node, h5py.Dataset):
            data = node[()]
            contents[name] = ("dataset", node.dtype.str, node.shape, node.compression, node.chunks,
                              data.tolist() if data.dtype.kind == "O" else data.tobytes(), _attrs(node))
        else:
            contents[name] = ("group", _attrs(node))

    with h5py.File(path, "r") as handle:
        contents["/"] = ("root", _attrs(handle))
        handle.visititems(visit)
    return contents


def leftovers(directory: str | Path) -> list[str]:
    """Temporaries, journals and work directories under ``directory`` (a finished job leaves none)."""
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*")
                  if p.name.startswith(".tmp-") or p.name.endswith((".journal", ".parts")))
