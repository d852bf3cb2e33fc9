"""DaveNet log-mel features: the numpy recipe against an independent computation, the audio of a media
shard, and the resume of a media job whose audio parts cannot all be trusted."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import signal as sps

from mcnflow.core.config import ConfigError, load_config
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, read_ledger, write_ledger
from mcnflow.core.plan import Plan
from mcnflow.core.shard_stage import ShardRun
from mcnflow.core.streams import stream
from mcnflow.features.audio import TooShort, check_settings, spectrogram_of
from mcnflow.features.logmel import log_mel
from mcnflow.features.store import ShardReader
from mcnflow.media.stage import Outputs, media_shard
from shard_utils import h5_contents, leftovers

REPO = Path(__file__).resolve().parents[1]

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


def test_settings_must_be_complete_and_known():
    assert check_settings(SETTINGS) == SETTINGS
    with pytest.raises(ConfigError, match="'features.audio.hop_ms'"):
        check_settings({k: v for k, v in SETTINGS.items() if k != "hop_ms"})
    with pytest.raises(ConfigError, match="'features.compression'"):
        check_settings({k: v for k, v in SETTINGS.items() if k != "compression"})
    with pytest.raises(ConfigError, match="unknown key.*gain"):
        check_settings({**SETTINGS, "gain": -4})


def test_less_audio_than_one_window_is_too_short():
    from mcnflow.media.consumers import ConsumerSkip, LogMel

    with pytest.raises(TooShort, match="399 audio samples, fewer than one 25 ms window"):
        spectrogram_of(np.zeros(399, np.float32), SETTINGS)
    spectrogram, n_samples = spectrogram_of(np.zeros(400, np.float32) + 0.1, SETTINGS)
    assert spectrogram.shape == (40, 3) and n_samples == 400
    consumer = LogMel(stream("audio"), SETTINGS, None)  # the media stage's audio consumer: too short is its feature row
    with pytest.raises(ConsumerSkip) as skip:
        consumer.prepare(np.zeros(399, np.float32))
    assert skip.value.status == "too_short"


# --- the audio of a media shard ------------------------------------------------------------------

def make_video(path, seconds, freq=None):
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"color=c=black:s=64x64:r=10:d={seconds}"]
    if freq is not None:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate={SR}:duration={seconds}", "-shortest"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p"] + (["-c:a", "aac", "-ac", "1"] if freq else []) + [str(path)]
    subprocess.run(cmd, check=True)
    return path


def stage_settings(**audio) -> dict:
    """config.yaml's media stage with the audio settings given, scaled down (no kept videos, tiny 2D frames,
    one 2D frame per batch)."""
    config = load_config([REPO / "config.yaml"], {
        "normalize": {"keep": False}, "training": {"video_features": ["2d"], "video_dim": 2048},
        "features": {"video": {"weights": "none", "short_side": 32, "batch_size": 1, "decode_workers": 0,
                               "device": "cpu"}, "audio": audio}})
    return json.loads(json.dumps(Plan(config).settings("media")))


def run_media(downloads: Path, out: Path, encoder, settings: dict | None = None) -> None:
    outputs = Outputs(out / "normalize.tsv", None, {name: (out / f"{name}.h5", out / f"{name}.tsv")
                                                    for name in ("video", "audio")})
    media_shard(downloads, "democorpus", "00003", outputs, settings or stage_settings(), progress=False,
                encoders={"video": encoder})


def downloads(path: Path, rows: list[tuple[str, Path | None]]) -> Path:
    write_ledger(path, [dict(video_id=vid, status="ok" if video else "unavailable", path=str(video or ""),
                             message="", attempts=1) for vid, video in rows], DOWNLOAD_COLUMNS)
    return path


@pytest.fixture(scope="module")
def encoder_2d():
    from mcnflow.features.video import build_encoder

    return build_encoder(stage_settings()["video"])


@pytest.fixture(scope="module")
def shard(tmp_path_factory, encoder_2d):
    root = tmp_path_factory.mktemp("audio")
    ledger = downloads(root / "download.tsv", [
        ("tone1000vid", make_video(root / "a.mp4", 1.5, freq=1000)), ("silentvideo", make_video(root / "b.mp4", 1.0)),
        ("shortclip01", make_video(root / "c.mp4", 0.5, freq=300)), ("neverarrive", None),
        ("lostfile001", root / "missing.mp4")])
    run_media(ledger, root / "out", encoder_2d)
    return root / "out" / "audio.h5", {row["video_id"]: row for row in read_ledger(root / "out" / "audio.tsv")}


def test_shard_outcomes(shard):
    out, ledger = shard
    assert {vid: row["status"] for vid, row in ledger.items()} == {
        "tone1000vid": "ok", "silentvideo": "no_audio", "shortclip01": "ok",
        "neverarrive": "no_media", "lostfile001": "no_media"}
    assert "input file is missing" in ledger["lostfile001"]["message"]
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


# --- a killed media job resumes: which audio parts it trusts ----------------------------------------

class Killed(BaseException):
    """The job dies here (nothing in the stage catches a BaseException that is not an Exception)."""


@pytest.fixture(scope="module")
def resume_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return downloads(root / "download.tsv", [
        ("silentvideo", make_video(root / "b.mp4", 1.0)), ("tone1000vid", make_video(root / "a.mp4", 1.5, freq=1000)),
        ("shortclip01", make_video(root / "c.mp4", 0.5, freq=300)), ("neverarrive", None),
        ("tone300long", make_video(root / "d.mp4", 2.0, freq=300))])


@pytest.fixture(scope="module")
def uninterrupted(resume_inputs, tmp_path_factory, encoder_2d):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_media(resume_inputs, out, encoder_2d)
    return out


def killed_after_two_videos(resume_inputs, out: Path, encoder, monkeypatch) -> Path:
    """A job killed when tone1000vid's 2D row is journaled (while shortclip01's frame is encoded): then
    silentvideo and tone1000vid have every row, the others none."""
    record = ShardRun.record

    def record_then_die(self, row):
        record(self, row)
        if self.ledger.name == "video.tsv" and row["video_id"] == "tone1000vid":
            raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(ShardRun, "record", record_then_die)
        with pytest.raises(Killed):
            run_media(resume_inputs, out, encoder)
    assert not (out / "audio.h5").exists() and not (out / "audio.tsv").exists()
    part = out / "audio.tsv.parts" / "tone1000vid.npz"
    assert part.is_file()
    return part


def media_log(caplog) -> tuple[str, str]:
    messages = [r.getMessage() for r in caplog.records]
    return (next(m for m in messages if "video(s) to decode" in m),
            next(m for m in messages if "computed video" in m).split("; computed ")[1])


@pytest.mark.slow
@pytest.mark.parametrize("change", ["nothing", "damaged part", "other settings", "changed source"])
def test_a_rerun_keeps_exactly_the_videos_whose_parts_it_can_trust(resume_inputs, uninterrupted, encoder_2d,
                                                                   tmp_path, caplog, monkeypatch, change):
    out = tmp_path / "features"
    part = killed_after_two_videos(resume_inputs, out, encoder_2d, monkeypatch)
    settings = None
    if change == "nothing":  # silentvideo and tone1000vid are kept whole
        expected = ("democorpus/00003: 3 video(s) to decode, 2 kept from an earlier run", "video 2, audio 2")
    elif change == "damaged part":
        part.write_bytes(part.read_bytes()[:-100])
        expected = ("democorpus/00003: 4 video(s) to decode, 1 kept from an earlier run", "video 3, audio 3")
    elif change == "other settings":  # nothing of another recipe is reused
        settings = stage_settings(top_db=60.0)
        expected = ("democorpus/00003: 5 video(s) to decode, 0 kept from an earlier run", "video 4, audio 3")
    else:
        os.utime(read_ledger(resume_inputs)[1]["path"])  # the download of tone1000vid was written again
        expected = ("democorpus/00003: 4 video(s) to decode, 1 kept from an earlier run", "video 3, audio 3")
    caplog.set_level(logging.INFO, logger="mcnflow")
    run_media(resume_inputs, out, encoder_2d, settings)
    assert media_log(caplog) == expected
    if change == "other settings":
        spectrogram = ShardReader(out / "audio.h5").read("tone1000vid")
        assert float(spectrogram.min()) == -60.0  # the new floor, not the part made with top_db 80
    else:
        for name in ("audio", "video"):
            assert h5_contents(out / f"{name}.h5") == h5_contents(uninterrupted / f"{name}.h5")
            assert read_ledger(out / f"{name}.tsv") == read_ledger(uninterrupted / f"{name}.tsv")
    assert leftovers(out) == []
