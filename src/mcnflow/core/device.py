"""One device choice for every stage that runs a model (video extraction, training, evaluation)."""

from __future__ import annotations

import torch

from mcnflow.core.config import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(setting: str, key: str) -> torch.device:
    """``auto`` -> cuda when torch sees one, else cpu; ``cuda`` without a GPU is a configuration error.

    ``key`` is the config key the setting came from, so the error names it.
    """
    if setting not in DEVICE_CHOICES:
        raise ConfigError(f"config key '{key}': {setting!r} is not allowed; allowed values: "
                          + ", ".join(repr(c) for c in DEVICE_CHOICES))
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key '{key}': 'cuda' but torch sees no CUDA device")
    return torch.device(setting)
