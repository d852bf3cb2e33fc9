"""DaveNet log-mel features: the numpy recipe against an independent computation, and the shard CLI."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import signal as sps

from mcnflow.features import audio
from mcnflow.features.logmel import log_mel
from mcnflow.features.store import ShardReader
from mcnflow.core.ledger import FEATURE_COLUMNS, NORMALIZE_COLUMNS, Journal, journal_path, read_ledger, write_ledger
from shard_utils import h5_contents, leftovers

SR = 16000
RECIPE = dict(preemphasis=0.97, window_ms=25, hop_ms=10, n_mels=40, fmin=20, fmax=None, top_db=80.0)
SETTINGS = {"sample_rate": SR, **RECIPE, "compression": None}


# --- an independent reference: scipy's STFT and a mel filterbank written band by band --------------

def slaney_mel(hz):
    hz = np.asarray(hz, dtype=float)
    return np.where(hz < 1000, 3 * hz / 200, 15 + 27 * np.log(np.maximum(hz, 1e-9) / 1000) / np.log(6.4))


def slaney_hz(mel):
    mel = np.asarray(mel, dtype=float)
    return np.where(mel < 15, 200 * mel / 3, 1000 * 6.4 ** ((mel - 15) / 27))


def reference_centres(n_mels=40, fmin=20.0, fmax=SR / 2):
    points = slaney_hz(np.linspace(slaney_mel(fmin), slaney_mel(fmax), n_mels + 2))
    return points, points[1:-1]


def reference_log_mel(y, n_mels=40, fmin=20.0, top_db=80.0):
    n_fft, hop = 400, 160
    y = y.astype(float) - y.mean()
    y = sps.lfilter([1.0, -0.97], [1.0], y)  # pre-emphasis; y[0] kept as is
    padded = np.pad(y, n_fft // 2, mode="reflect")
    n = np.arange(n_fft)
    window = 0.54 - 0.46 * np.cos(2 * np.pi * n / (n_fft - 1))  # symmetric Hamming
    _, _, spectrum = sps.stft(padded, fs=SR, window=window, nperseg=n_fft, noverlap=n_fft - hop, nfft=n_fft,
                              boundary=None, padded=False, detrend=False, return_onesided=True)
    power = np.abs(spectrum * window.sum()) ** 2  # undo scipy's 1/sum(window) scaling
    freqs = np.arange(n_fft // 2 + 1) * SR / n_fft
    points, _ = reference_centres(n_mels, fmin)
    bank = np.zeros((n_mels, len(freqs)))
    for band in range(n_mels):
        low, centre, high = points[band], points[band + 1], points[band + 2]
        for k, f in enumerate(freqs):
            if low < f <= centre:
                bank[band, k] = (f - low) / (centre - low)
            elif centre < f < high:
                bank[band, k] = (high - f) / (high - centre)
        bank[band] *= 2 / (high - low)
    mel = bank @ power
    db = 10 * np.log10(np.maximum(mel, 1e-10) / mel.max())
    return np.maximum(db, db.max() - top_db)


def tone(freq, seconds, noise=0.0, seed=0):
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.5 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(len(t))).astype(np.float32)


def test_log_mel_matches_independent_computation_on_440_hz():
    y = tone(440, 1.0, noise=0.01)
    ours = log_mel(y, SR, **RECIPE)
    ref = reference_log_mel(y)
    assert ours.dtype == np.float16
    assert ours.shape == (40, 101) == ref.shape  # centred frames: 1 + n_samples // hop, 100 per second
    assert float(ours.max()) == 0.0
    np.testing.assert_allclose(ours.astype(float), ref, atol=0.1)
    _, centres = reference_centres()
    peak = int(np.argmax(ours.astype(float).mean(axis=1)))
    assert peak == int(np.argmin(np.abs(centres - 440)))


def test_tones_peak_in_their_own_mel_bins():
    low = log_mel(tone(300, 0.5), SR, **RECIPE).astype(float).mean(axis=1)
    high = log_mel(tone(1000, 0.5), SR, **RECIPE).astype(float).mean(axis=1)
    _, centres = reference_centres()
    assert np.argmax(low) == np.argmin(np.abs(centres - 300))
    assert np.argmax(high) == np.argmin(np.abs(centres - 1000))
    assert np.argmax(high) > np.argmax(low)


def test_top_db_floor_and_no_floor():
    y = tone(440, 0.5)
    floored = log_mel(y, SR, **RECIPE)
    unfloored = log_mel(y, SR, **{**RECIPE, "top_db": None})
    assert floored.min() == -80.0
    assert unfloored.min() < -80.0


def test_log_mel_rejects_less_than_one_window():
    with pytest.raises(ValueError, match="shorter than one"):
        log_mel(np.zeros(399, np.float32), SR, **RECIPE)


# --- the shard CLI on real (tiny) videos ------------------------------------------------------------

def make_video(path, seconds, freq=None):
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"color=c=black:s=64x64:r=10:d={seconds}"]
    if freq is not None:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={SR}:duration={seconds}", "-shortest"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p"] + (["-c:a", "aac", "-ac", "1"] if freq else []) + [str(path)]
    subprocess.run(cmd, check=True)
    return path


def normalize_row(video_id, path, has_audio, status="ok", duration=1.0):
    return {"video_id": video_id, "status": status, "message": "", "has_audio": has_audio, "duration": duration,
            "width": 64, "height": 64, "fps": 10, "path": str(path)}


def run_cli(argv):
    parser = argparse.ArgumentParser()
    audio.configure_parser(parser)
    return audio.main(parser.parse_args(argv))


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    rows = [
        normalize_row("tone1000vid", make_video(root / "a.mp4", 1.5, freq=1000), True, duration=1.5),
        normalize_row("silentvideo", make_video(root / "b.mp4", 1.0), False),
        normalize_row("shortclip01", make_video(root / "c.mp4", 0.5, freq=300), True, duration=0.5),
        normalize_row("neverarrive", "", None, status="not_downloaded"),
        normalize_row("lostfile001", root / "missing.mp4", True),
    ]
    write_ledger(root / "normalize.tsv", rows, NORMALIZE_COLUMNS)
    out, ledger = root / "features" / "shard-00003.h5", root / "features" / "shard-00003.tsv"
    code = run_cli(["--normalize-ledger", str(root / "normalize.tsv"), "--corpus", "democorpus", "--shard", "00003",
                    "--output", str(out), "--ledger", str(ledger), "--settings", json.dumps(SETTINGS)])
    assert code == 0
    return out, {row["video_id"]: row for row in read_ledger(ledger)}


def test_shard_outcomes(shard):
    out, ledger = shard
    assert {vid: row["status"] for vid, row in ledger.items()} == {
        "tone1000vid": "ok", "silentvideo": "no_audio", "shortclip01": "ok",
        "neverarrive": "no_media", "lostfile001": "error"}
    assert "not found" in ledger["lostfile001"]["message"]
    reader = ShardReader(out)
    assert reader.video_ids() == ["tone1000vid", "shortclip01"]
    assert "silentvideo" not in reader  # no fake silence
    assert {row["video_id"]: row["status"] for row in reader.index()}["silentvideo"] == "no_audio"


def test_shard_spectrograms(shard):
    out, ledger = shard
    reader = ShardReader(out)
    attrs = reader.attrs
    assert attrs["recipe"] == "DaveNet log-mel (AVLnet)" and attrs["modality"] == "audio"
    assert attrs["n_mels"] == 40 and attrs["top_db"] == 80.0 and attrs["fmax"] == "null"
    _, centres = reference_centres()
    for vid, freq, seconds in (("tone1000vid", 1000, 1.5), ("shortclip01", 300, 0.5)):
        spec = reader.read(vid)
        meta = reader.video_attrs(vid)
        assert spec.dtype == np.float16 and spec.shape[0] == 40
        assert spec.shape[1] == 1 + meta["n_samples"] // 160 == int(ledger[vid]["length"])
        assert abs(meta["duration"] - seconds) < 0.1
        assert float(spec.max()) == 0.0
        # the tone's band dominates the middle of the clip (AAC edges are left out)
        middle = spec[:, spec.shape[1] // 4: 3 * spec.shape[1] // 4].astype(float).mean(axis=1)
        assert np.argmax(middle) == np.argmin(np.abs(centres - freq))


# --- a killed shard job resumes ---------------------------------------------------------------------

# The real CLI in a child process that SIGKILLs itself right after the first ``ok`` journal row, i.e.
# once the first video's part and journal row are on disk: the state a job killed there leaves.
KILL_AFTER_FIRST_OK = """
import os, signal, sys
from mcnflow.core.shard_stage import ShardRun
record = ShardRun.record
def record_then_die(self, row):
    record(self, row)
    if row["status"] == "ok":
        os.kill(os.getpid(), signal.SIGKILL)
ShardRun.record = record_then_die
from mcnflow import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def resume_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    rows = [
        normalize_row("silentvideo", make_video(root / "b.mp4", 1.0), False),
        normalize_row("tone1000vid", make_video(root / "a.mp4", 1.5, freq=1000), True, duration=1.5),
        normalize_row("shortclip01", make_video(root / "c.mp4", 0.5, freq=300), True, duration=0.5),
        normalize_row("neverarrive", "", None, status="not_downloaded"),
        normalize_row("tone300long", make_video(root / "d.mp4", 2.0, freq=300), True, duration=2.0),
    ]
    return write_ledger(root / "normalize.tsv", rows, NORMALIZE_COLUMNS)


def audio_argv(normalize_ledger, out_dir, settings=SETTINGS):
    return ["--normalize-ledger", str(normalize_ledger), "--corpus", "democorpus", "--shard", "00003",
            "--output", str(out_dir / "shard-00003.h5"), "--ledger", str(out_dir / "shard-00003.tsv"),
            "--settings", json.dumps(settings)]


def killed_after_first_video(normalize_ledger, out_dir):
    argv = audio_argv(normalize_ledger, out_dir)
    done = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_OK, "extract", "audio", *argv],
                          capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not (out_dir / "shard-00003.h5").exists() and not (out_dir / "shard-00003.tsv").exists()
    journal = Journal(journal_path(out_dir / "shard-00003.tsv"), FEATURE_COLUMNS).read()
    assert [(r["video_id"], r["status"]) for r in journal.values()] == [("silentvideo", "no_audio"),
                                                                        ("tone1000vid", "ok")]
    part = out_dir / "shard-00003.tsv.parts" / "tone1000vid.npz"
    assert part.is_file()
    return argv, part


def extraction_log(caplog) -> str:
    return [r.getMessage() for r in caplog.records if "kept" in r.getMessage() and "extracted" in r.getMessage()][-1]


@pytest.fixture(scope="module")
def uninterrupted(resume_inputs, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("uninterrupted")
    assert run_cli(audio_argv(resume_inputs, out_dir)) == 0
    return out_dir


def test_killed_audio_shard_resumes_without_redoing_finished_videos(resume_inputs, uninterrupted, tmp_path,
                                                                     caplog):
    out_dir = tmp_path / "features"
    argv, part = killed_after_first_video(resume_inputs, out_dir)
    # another shard's job writes beside this one; this shard's own killed assembly left a temporary
    neighbour = out_dir / ".tmp-shard-00004.h5.n31ghb0r"
    neighbour.write_bytes(b"being written by shard 00004")
    own_stale = out_dir / ".tmp-shard-00003.h5.k1lled00"
    own_stale.write_bytes(b"half an hdf5 file")

    caplog.set_level(logging.INFO, logger="mcnflow")
    assert run_cli(argv) == 0

    # the journal's two rows were kept; of the three videos with audio only the two unfinished ones ran
    assert extraction_log(caplog) == "democorpus/00003: extracted 2 video(s), kept 2 outcome(s) from an earlier run"
    assert h5_contents(out_dir / "shard-00003.h5") == h5_contents(uninterrupted / "shard-00003.h5")
    assert read_ledger(out_dir / "shard-00003.tsv") == read_ledger(uninterrupted / "shard-00003.tsv")
    assert neighbour.read_bytes() == b"being written by shard 00004" and not own_stale.exists()
    neighbour.unlink()
    assert leftovers(out_dir) == [] and sorted(p.name for p in out_dir.iterdir()) == ["shard-00003.h5",
                                                                                     "shard-00003.tsv"]


@pytest.mark.parametrize("change", ["damaged part", "other settings", "changed source"])
def test_untrustworthy_parts_are_computed_again(resume_inputs, uninterrupted, tmp_path, caplog, change):
    out_dir = tmp_path / "features"
    argv, part = killed_after_first_video(resume_inputs, out_dir)
    settings = SETTINGS
    if change == "damaged part":
        part.write_bytes(part.read_bytes()[:-100])
        expected = "extracted 3 video(s), kept 1 outcome(s)"  # only silentvideo's no_audio row is kept
    elif change == "other settings":
        settings = {**SETTINGS, "top_db": 60.0}
        argv = audio_argv(resume_inputs, out_dir, settings)
        expected = "extracted 3 video(s), kept 0 outcome(s)"  # nothing of another recipe is reused
    else:
        source = Path(read_ledger(resume_inputs)[1]["path"])
        os.utime(source)  # e.g. normalize wrote it again
        expected = "extracted 3 video(s), kept 1 outcome(s)"
    caplog.set_level(logging.INFO, logger="mcnflow")
    assert run_cli(argv) == 0
    assert f"democorpus/00003: {expected} from an earlier run" == extraction_log(caplog)
    if change == "other settings":
        spectrogram = ShardReader(out_dir / "shard-00003.h5").read("tone1000vid")
        assert float(spectrogram.min()) == -60.0  # the new floor, not the part made with top_db 80
    else:
        assert h5_contents(out_dir / "shard-00003.h5") == h5_contents(uninterrupted / "shard-00003.h5")
    assert leftovers(out_dir) == []
