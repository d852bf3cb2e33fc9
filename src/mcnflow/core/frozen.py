"""Read-only settings: what every stage receives, so no stage can change another's view of the config."""

from __future__ import annotations

import copy
from typing import Any, Mapping


class FrozenSettings(dict):
    """A dict that refuses changes. Nested mappings are frozen too and lists become tuples.

    It stays a ``dict`` so ``json.dumps`` and ``isinstance(x, dict)`` work; a deep copy is an
    ordinary, mutable dict (what ``deep_merge`` and friends build on).
    """

    def _refuse(self, *args, **kwargs):
        raise TypeError("settings are read-only; copy them with dict(...) or copy.deepcopy(...)")

    __setitem__ = __delitem__ = _refuse
    update = pop = popitem = clear = setdefault = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __deepcopy__(self, memo) -> dict:
        return {key: copy.deepcopy(value, memo) for key, value in self.items()}

    def __copy__(self) -> dict:
        return dict(self)

    def __reduce__(self):
        # Pickling (DataLoader workers, multiprocessing) rebuilds through dict.__init__. Files that
        # must load without mcnflow (a checkpoint's meta) store thaw(settings) instead.
        return (FrozenSettings, (dict(self),))

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def freeze(value: Any) -> Any:
    """``value`` with every mapping a FrozenSettings and every list a tuple."""
    if isinstance(value, Mapping):
        return FrozenSettings({key: freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """Plain JSON-like data again: dicts and lists (what a checkpoint or a JSON file stores)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(item) for item in value]
    return value
