"""``mcnflow extract audio``: DaveNet log-mel spectrograms of one shard's normalized videos.

Each video's audio is decoded by ffmpeg to 16 kHz mono float32 PCM through a pipe (no wav files on
disk), then :func:`mcnflow.features.logmel.log_mel` turns it into float16 (40, frames) at 100 frames/s
(frame ``t`` centred on ``t / 100`` s). AVLnet's ``sox gain -4`` before the downmix is left out: the
spectrogram is in dB relative to the clip's own maximum, so a constant gain cancels.

Outcomes (ledger ``status``): ok; no_audio (the normalize ledger says the video has no audio stream:
nothing is stored, no invented silence); no_media (the video did not survive normalization);
too_short (less audio than one 25 ms window); error (decoding failed; ``message`` says why).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np
from tqdm import tqdm

from mcnflow.core.atomic import TMP_PREFIX
from mcnflow.core.config import ConfigError, add_settings_arguments, load_config, settings_from_args
from mcnflow.core.ledger import FEATURE_COLUMNS, read_ledger, write_ledger
from mcnflow.features.logmel import log_mel, n_frames, window_samples
from mcnflow.features.store import ShardWriter

log = logging.getLogger(__name__)

RECIPE = "DaveNet log-mel (AVLnet)"
SETTING_KEYS = ("sample_rate", "preemphasis", "window_ms", "hop_ms", "n_mels", "fmin", "fmax", "top_db", "compression")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--normalize-ledger", required=True, help="results/normalize/{corpus}/shard-{shard}.tsv")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--shard", required=True, help="5-digit shard id, e.g. 00003")
    parser.add_argument("--output", required=True, help="results/features/{corpus}/audio/shard-{shard}.h5")
    parser.add_argument("--ledger", required=True, help="per-video outcomes (TSV), e.g. next to --output")
    add_settings_arguments(parser)


def audio_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``features.audio`` plus ``features.compression`` (the workflow passes both as one JSON object)."""
    if getattr(args, "settings", None):
        settings = dict(settings_from_args(args, "features.audio"))
    else:
        features = load_config(args.config)["features"]
        settings = {**features["audio"], "compression": features.get("compression")}
    missing = [key for key in SETTING_KEYS if key not in settings]
    if missing:
        raise ConfigError("audio settings lack " + ", ".join(
            "'features.compression'" if key == "compression" else f"'features.audio.{key}'" for key in missing))
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise ConfigError(f"audio settings: unknown key(s) {', '.join(unknown)}; "
                          f"allowed keys: {', '.join(SETTING_KEYS)}")
    return settings


def decode_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The first audio stream of ``path`` as mono float32 samples at ``sample_rate`` (ffmpeg averages channels)."""
    stream = ffmpeg.input(str(path)).output("pipe:", map="0:a:0", format="f32le", acodec="pcm_f32le",
                                            ac=1, ar=sample_rate)
    out, _ = stream.global_args("-nostdin", "-hide_banner", "-loglevel", "error").run(
        capture_stdout=True, capture_stderr=True)
    return np.frombuffer(out, dtype="<f4")


def _ffmpeg_message(exc: ffmpeg.Error) -> str:
    text = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return "ffmpeg: " + (text[-1] if text else str(exc))


class TooShort(ValueError):
    """Less audio than one analysis window."""


def extract_video(path: str | Path, settings: dict[str, Any]) -> tuple[np.ndarray, int]:
    """(log-mel float16 (n_mels, frames), n_samples) of one video; raises TooShort below one window."""
    samples = decode_audio(path, settings["sample_rate"])
    window = window_samples(settings["sample_rate"], settings["window_ms"])
    if len(samples) < window:
        raise TooShort(f"{len(samples)} audio samples, fewer than one {settings['window_ms']} ms window ({window})")
    spectrogram = log_mel(samples, settings["sample_rate"], preemphasis=settings["preemphasis"],
                          window_ms=settings["window_ms"], hop_ms=settings["hop_ms"], n_mels=settings["n_mels"],
                          fmin=settings["fmin"], fmax=settings["fmax"], top_db=settings["top_db"])
    return spectrogram, len(samples)


def _remove_own_temps(output: Path) -> None:
    # Only this shard's leftovers: other shards' jobs write temporaries in the same folder right now.
    for stale in output.parent.glob(f"{TMP_PREFIX}{output.name}.*"):
        stale.unlink(missing_ok=True)


def extract_shard(normalize_rows: list[dict[str, str]], corpus: str, shard: str, output: str | Path,
                  settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Write the shard's HDF5 file; return one ledger row per normalize-ledger row, in its order."""
    output = Path(output)
    _remove_own_temps(output)
    sample_rate = settings["sample_rate"]
    attrs = {**settings, "recipe": RECIPE,
             "n_fft": window_samples(sample_rate, settings["window_ms"]),
             "hop_length": window_samples(sample_rate, settings["hop_ms"]),
             "frames_per_second": sample_rate / window_samples(sample_rate, settings["hop_ms"]),
             "stft": "centred (frame t at t*hop), reflect padding, symmetric Hamming window",
             "db_reference": "clip maximum (0 dB)"}
    rows: list[dict[str, Any]] = []
    with ShardWriter(output, "audio", corpus, int(shard), attrs=attrs, compression=settings["compression"]) as writer:
        for row in tqdm(normalize_rows, desc=f"audio {corpus}/{shard}", unit="video"):
            video_id = row["video_id"]

            def outcome(status: str, message: str = "", length: int = 0) -> None:
                rows.append({"video_id": video_id, "status": status, "message": message, "length": length})
                if status != "ok":
                    writer.mark(video_id, status)

            if row.get("status") != "ok":
                outcome("no_media", f"normalize status {row.get('status') or 'missing'}")
                continue
            if row.get("has_audio", "").lower() != "true":
                outcome("no_audio", "the normalized video has no audio stream")
                continue
            path = row.get("path", "")
            if not path or not Path(path).is_file():
                outcome("error", f"normalized file not found: {path!r}")
                continue
            try:
                spectrogram, n_samples = extract_video(path, settings)
            except ffmpeg.Error as exc:
                outcome("error", _ffmpeg_message(exc))
                continue
            except TooShort as exc:
                outcome("too_short", str(exc))
                continue
            frames = spectrogram.shape[1]
            assert frames == n_frames(n_samples, attrs["hop_length"])
            writer.add(video_id, spectrogram, attrs={"duration": n_samples / sample_rate, "n_samples": n_samples})
            outcome("ok", length=frames)
    return rows


def main(args: argparse.Namespace) -> int:
    settings = audio_settings(args)
    if not (args.shard.isdigit() and len(args.shard) == 5):
        raise ConfigError(f"--shard {args.shard!r}: expected a 5-digit shard id such as 00003")
    normalize_rows = read_ledger(args.normalize_ledger)
    rows = extract_shard(normalize_rows, args.corpus, args.shard, args.output, settings)
    # The ledger is written after the HDF5 file is in place: a ledger never describes a missing file.
    write_ledger(args.ledger, rows, FEATURE_COLUMNS)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    log.info("%s shard %s: %s", args.corpus, args.shard, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0
