"""DaveNet log-mel spectrogram (the AVLnet / MCN audio input) as a pure numpy function.

The recipe is ``LoadAudio`` of roudimit/AVLnet ``audio_to_spectrograms.py``, which calls librosa
(< 0.10, the version of its time); librosa is not a dependency, so each librosa step is written out:

1. DC removal (``y - y.mean()``), pre-emphasis ``y[n] - 0.97 y[n-1]`` (first sample kept).
2. STFT as ``librosa.stft(center=True)``: the signal is padded by ``n_fft // 2`` samples on each side
   by *reflection* (librosa's default ``pad_mode`` before 0.10), so frame ``t`` is centred on sample
   ``t * hop`` (time ``t / 100`` s) and a clip of ``n`` samples has ``1 + n // hop`` frames.
   ``n_fft = win_length = 25 ms`` (400 at 16 kHz), hop 10 ms (160), *symmetric* Hamming window
   (AVLnet passes ``scipy.signal.hamming``, whose default is ``sym=True``).
3. Power spectrum ``|STFT|^2``, then a Slaney mel filterbank (librosa ``filters.mel`` defaults:
   ``htk=False``, area normalisation), 40 bands from ``fmin`` 20 Hz to ``fmax`` sr / 2.
4. ``librosa.power_to_db(S, ref=np.max)``: ``10 log10(max(S, amin) / max(S))`` with ``amin`` 1e-10,
   then floored at ``max - top_db`` (librosa's default ``top_db`` is 80 dB; ``None`` disables it).
   The clip's loudest value is therefore 0 dB and everything else is negative.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import windows

# librosa.power_to_db's floor on power before the log (a numerical guard, not a tuning knob).
AMIN = 1e-10
# Frames are processed in blocks so a two-hour video never holds its whole complex STFT in memory.
BLOCK_FRAMES = 8192


def window_samples(sample_rate: int, milliseconds: float) -> int:
    """A duration in ms as a whole number of samples (25 ms at 16 kHz -> 400)."""
    return int(round(sample_rate * milliseconds / 1000.0))


def n_frames(n_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT: one per hop, the first centred on sample 0."""
    return 1 + n_samples // hop_length


# Slaney's mel scale (librosa ``htk=False``): linear below 1 kHz, logarithmic above.
SLANEY_HZ_PER_MEL = 200.0 / 3
SLANEY_MIN_LOG_HZ = 1000.0
SLANEY_MIN_LOG_MEL = SLANEY_MIN_LOG_HZ / SLANEY_HZ_PER_MEL
SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    hz = np.asanyarray(hz, dtype=np.float64)
    linear = hz / SLANEY_HZ_PER_MEL
    logarithmic = SLANEY_MIN_LOG_MEL + np.log(np.maximum(hz, SLANEY_MIN_LOG_HZ) / SLANEY_MIN_LOG_HZ) / SLANEY_LOG_STEP
    return np.where(hz >= SLANEY_MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asanyarray(mel, dtype=np.float64)
    linear = SLANEY_HZ_PER_MEL * mel
    logarithmic = SLANEY_MIN_LOG_HZ * np.exp(SLANEY_LOG_STEP * (np.maximum(mel, SLANEY_MIN_LOG_MEL) - SLANEY_MIN_LOG_MEL))
    return np.where(mel >= SLANEY_MIN_LOG_MEL, logarithmic, linear)


def mel_band_edges(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """``n_mels + 2`` frequencies (Hz) equally spaced in mel: band ``i`` rises from edge i to i+1, falls to i+2."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters with Slaney area normalisation (librosa ``filters.mel``)."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin}, fmax={fmax}, sr={sample_rate}")
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    edges = mel_band_edges(n_mels, fmin, fmax)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney normalisation: every band has (about) unit area, so wide high bands are not louder.
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


def preemphasize(signal: np.ndarray, coefficient: float) -> np.ndarray:
    """``y[0], y[1:] - c * y[:-1]`` (DaveNet's ``preemphasis``)."""
    out = np.empty_like(signal)
    out[0] = signal[0]
    out[1:] = signal[1:] - coefficient * signal[:-1]
    return out


def mel_power(signal: np.ndarray, n_fft: int, hop_length: int, filterbank: np.ndarray) -> np.ndarray:
    """Mel-band power (n_mels, frames) of a centred, reflect-padded, Hamming-windowed STFT."""
    pad = n_fft // 2
    padded = np.pad(signal, pad, mode="reflect")
    window = windows.hamming(n_fft, sym=True)
    total = n_frames(len(signal), hop_length)
    out = np.empty((filterbank.shape[0], total), dtype=np.float64)
    for first in range(0, total, BLOCK_FRAMES):
        last = min(total, first + BLOCK_FRAMES)
        span = padded[first * hop_length:(last - 1) * hop_length + n_fft]
        frames = np.lib.stride_tricks.sliding_window_view(span, n_fft)[::hop_length]
        spectrum = np.fft.rfft(frames * window, n=n_fft, axis=1)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        out[:, first:last] = filterbank @ power.T
    return out


def power_to_db(power: np.ndarray, top_db: float | None) -> np.ndarray:
    """dB relative to the clip's maximum (``librosa.power_to_db(ref=np.max)``)."""
    log_power = 10.0 * np.log10(np.maximum(power, AMIN))
    log_power -= 10.0 * np.log10(max(float(power.max()), AMIN))
    if top_db is not None:
        if top_db < 0:
            raise ValueError(f"top_db must be >= 0, got {top_db}")
        log_power = np.maximum(log_power, log_power.max() - top_db)
    return log_power


def log_mel(samples: np.ndarray, sample_rate: int, *, preemphasis: float, window_ms: float, hop_ms: float,
            n_mels: int, fmin: float, fmax: float | None, top_db: float | None) -> np.ndarray:
    """DaveNet log-mel spectrogram of mono ``samples``: float16 (n_mels, 1 + n_samples // hop)."""
    signal = np.asarray(samples, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {signal.shape}")
    n_fft = window_samples(sample_rate, window_ms)
    hop_length = window_samples(sample_rate, hop_ms)
    if len(signal) < n_fft:
        # Reflection padding and the frame count need at least one window of signal.
        raise ValueError(f"{len(signal)} samples is shorter than one {window_ms} ms window ({n_fft} samples)")
    signal = preemphasize(signal - signal.mean(), preemphasis)
    filterbank = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    return power_to_db(mel_power(signal, n_fft, hop_length, filterbank), top_db).astype(np.float16)
