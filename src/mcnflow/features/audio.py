"""DaveNet log-mel audio features (``features.audio``): settings, the spectrogram of 16 kHz mono
samples, and what the shard file says about them.

``mcnflow media`` (:class:`mcnflow.media.consumers.LogMel`) decodes each video's audio once, to
16 kHz mono float32 in memory; :func:`spectrogram_of` turns it into float16 (40, frames) at 100
frames/s (frame ``t`` centred on ``t / 100`` s) with :func:`mcnflow.features.logmel.log_mel`.
AVLnet's ``sox gain -4`` before the downmix is left out: the spectrogram is in dB relative to the
clip's own maximum, so a constant gain cancels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import ffmpeg
import numpy as np

from mcnflow.core.config import ConfigError
from mcnflow.features.logmel import log_mel, window_samples

RECIPE = "DaveNet log-mel (AVLnet)"
SETTING_KEYS = ("sample_rate", "preemphasis", "window_ms", "hop_ms", "n_mels", "fmin", "fmax", "top_db", "compression")


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings must be exactly features.audio plus features.compression (no silent defaults)."""
    missing = [key for key in SETTING_KEYS if key not in settings]
    if missing:
        raise ConfigError("audio settings lack " + ", ".join(
            "'features.compression'" if key == "compression" else f"'features.audio.{key}'" for key in missing))
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise ConfigError(f"audio settings: unknown key(s) {', '.join(unknown)}; "
                          f"allowed keys: {', '.join(SETTING_KEYS)}")
    return dict(settings)


def decode_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The first audio stream of a file as mono float32 samples at ``sample_rate`` (ffmpeg averages
    channels): the file-based decode for checks outside the pipeline (tests, benchmarks)."""
    stream = ffmpeg.input(str(path)).output("pipe:", map="0:a:0", format="f32le", acodec="pcm_f32le",
                                            ac=1, ar=sample_rate)
    out, _ = stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error").run(
        capture_stdout=True, capture_stderr=True)
    return np.frombuffer(out, dtype="<f4")


class TooShort(ValueError):
    """Less audio than one analysis window."""


def spectrogram_of(samples: np.ndarray, settings: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """(log-mel float16 (n_mels, frames), n_samples) of mono samples at ``settings["sample_rate"]``
    (``mcnflow media``'s in-memory 16 kHz stream); TooShort below one window."""
    window = window_samples(settings["sample_rate"], settings["window_ms"])
    if len(samples) < window:
        raise TooShort(f"{len(samples)} audio samples, fewer than one {settings['window_ms']} ms window ({window})")
    spectrogram = log_mel(samples, settings["sample_rate"], preemphasis=settings["preemphasis"],
                          window_ms=settings["window_ms"], hop_ms=settings["hop_ms"], n_mels=settings["n_mels"],
                          fmin=settings["fmin"], fmax=settings["fmax"], top_db=settings["top_db"])
    return spectrogram, len(samples)


def shard_attrs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The shard file's root attributes: the settings plus what they imply."""
    sample_rate = settings["sample_rate"]
    hop_length = window_samples(sample_rate, settings["hop_ms"])
    return {**settings, "recipe": RECIPE,
            "n_fft": window_samples(sample_rate, settings["window_ms"]),
            "hop_length": hop_length,
            "frames_per_second": sample_rate / hop_length,
            "stft": "centred (frame t at t*hop), reflect padding, symmetric Hamming window",
            "db_reference": "clip maximum (0 dB)"}
