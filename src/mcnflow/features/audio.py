"""``mcnflow extract audio``: DaveNet log-mel spectrograms of one shard's normalized videos.

Each video's audio is decoded by ffmpeg to 16 kHz mono float32 PCM through a pipe (no wav files on
disk), then :func:`mcnflow.features.logmel.log_mel` turns it into float16 (40, frames) at 100 frames/s
(frame ``t`` centred on ``t / 100`` s). AVLnet's ``sox gain -4`` before the downmix is left out: the
spectrogram is in dB relative to the clip's own maximum, so a constant gain cancels.

Outcomes (ledger ``status``): ok; no_audio (the normalize ledger says the video has no audio stream:
nothing is stored, no invented silence); no_media (the video did not survive normalization);
too_short (less audio than one 25 ms window); error (decoding failed; ``message`` says why).

A killed job resumes: each finished video's spectrogram goes to a part in the shard's work directory
and then to the journal (:class:`mcnflow.core.shard_stage.ShardRun`); the rerun recomputes only the
videos whose part it cannot trust, and assembles the shard file from the parts at the end.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import ffmpeg
import numpy as np
from tqdm import tqdm

from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args
from mcnflow.core.ledger import FEATURE_COLUMNS, read_ledger
from mcnflow.core.shard_stage import ShardRun
from mcnflow.core.status import FeatureStatus, NormalizeStatus
from mcnflow.features.logmel import log_mel, n_frames, window_samples
from mcnflow.features.store import assemble_shard, part_row_trusted, parts_fingerprint, source_identity, write_part

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
    settings = dict(settings_from_args(args, "features.audio"))  # mcnflow.core.plan's features.audio stage
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


def extract_video(path: str | Path, settings: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """(log-mel float16 (n_mels, frames), n_samples) of one video; raises TooShort below one window."""
    return spectrogram_of(decode_audio(path, settings["sample_rate"]), settings)


def spectrogram_of(samples: np.ndarray, settings: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """(log-mel float16 (n_mels, frames), n_samples) of mono samples at ``settings["sample_rate"]``
    (also what ``mcnflow media`` computes from its in-memory 16 kHz stream); TooShort below one window."""
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


def _outcome(video_id: str, status: str, message: str = "", length: int = 0) -> dict[str, Any]:
    return {"video_id": video_id, "status": status, "message": message, "length": length}


def _plan_outcome(row: Mapping[str, str]) -> dict[str, Any] | None:
    """The outcome the normalize row already decides (no audio to extract), or None."""
    video_id = row["video_id"]
    if row.get("status") != NormalizeStatus.OK:
        return _outcome(video_id, FeatureStatus.NO_MEDIA, f"normalize status {row.get('status') or 'missing'}")
    if row.get("has_audio", "").lower() != "true":
        return _outcome(video_id, FeatureStatus.NO_AUDIO, "the normalized video has no audio stream")
    path = row.get("path", "")
    if not path or not Path(path).is_file():
        return _outcome(video_id, FeatureStatus.ERROR, f"normalized file not found: {path!r}")
    return None


def extract_shard(normalize_rows: Sequence[Mapping[str, str]], corpus: str, shard: str, output: str | Path,
                  ledger: str | Path, settings: Mapping[str, Any]) -> list[dict[str, str]]:
    """Write the shard's HDF5 file, then its ledger; return one ledger row per normalize-ledger row, in
    its order.

    Resumable: each finished video goes to a part in the shard's work directory and then to the
    journal, so the rerun of a killed job computes only the videos it had not finished.
    """
    output = Path(output)
    order = [row["video_id"] for row in normalize_rows]
    if len(set(order)) != len(order):
        raise ValueError("the normalize ledger lists a video twice")
    attrs = shard_attrs(settings)
    sample_rate = settings["sample_rate"]
    fingerprint = parts_fingerprint("audio", attrs, normalize_rows)
    sources = {row["video_id"]: row.get("path", "") for row in normalize_rows}

    run = ShardRun(ledger, FEATURE_COLUMNS, outputs=[output], fingerprint=fingerprint,
                   trust=lambda video_id, row: part_row_trusted(run, video_id, row, "audio",
                                                                fingerprint=fingerprint, source=sources[video_id]))
    computed = 0
    for row in tqdm(normalize_rows, desc=f"audio {corpus}/{shard}", unit="video"):
        video_id = row["video_id"]
        if run.settled(video_id) is not None:
            continue
        planned = _plan_outcome(row)
        if planned is not None:
            run.record(planned)
            continue
        path = row["path"]
        try:
            source = source_identity(path)
            spectrogram, n_samples = extract_video(path, settings)
        except ffmpeg.Error as exc:
            run.record(_outcome(video_id, FeatureStatus.ERROR, _ffmpeg_message(exc)))
            continue
        except TooShort as exc:
            run.record(_outcome(video_id, FeatureStatus.TOO_SHORT, str(exc)))
            continue
        except OSError as exc:
            run.record(_outcome(video_id, FeatureStatus.ERROR, f"{path}: {exc}"))
            continue
        frames = spectrogram.shape[1]
        assert frames == n_frames(n_samples, attrs["hop_length"])
        write_part(run.part_path(video_id), spectrogram,
                   attrs={"duration": n_samples / sample_rate, "n_samples": n_samples},
                   meta={"fingerprint": fingerprint, **source})
        run.record(_outcome(video_id, FeatureStatus.OK, length=frames))
        computed += 1
    log.info("%s/%s: extracted %d video(s), kept %d outcome(s) from an earlier run", corpus, shard, computed,
             run.resumed)

    entries = []
    for video_id in order:
        status = str(run.rows[video_id]["status"])
        entries.append((video_id, status, run.part_path(video_id) if status == FeatureStatus.OK else None))
    assemble_shard(output, "audio", corpus, int(shard), entries, attrs=attrs, compression=settings["compression"])
    # The ledger is written after the HDF5 file is in place: a ledger never describes a missing file.
    return run.finish(order)


def main(args: argparse.Namespace) -> int:
    settings = audio_settings(args)
    if not (args.shard.isdigit() and len(args.shard) == 5):
        raise ConfigError(f"--shard {args.shard!r}: expected a 5-digit shard id such as 00003")
    normalize_rows = read_ledger(args.normalize_ledger)
    rows = extract_shard(normalize_rows, args.corpus, args.shard, args.output, args.ledger, settings)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    log.info("%s shard %s: %s", args.corpus, args.shard, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0
