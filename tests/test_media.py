"""mcnflow media: one decode per video feeds the normalized file, the 2D/3D frames and the audio.

What is proven here:
* the decode-once frames and audio are bit-identical to the normalization applied in memory in
  today's filter order (resize first, then the frame rate; no x264, no AAC): the cheap reordering
  (frame rate first) changes nothing;
* the kept normalized file holds those frames after the x264 round trip, with keyframes exactly at
  the 1 fps sampler's frames (a keyframe-only decode gives the same frames);
* features from the decode-once path equal the two-step path's (decoding the kept file again with
  plain ffmpeg, then the same models) within the x264 / AAC round trip: video rows <= 0.2 x the
  distance between neighbouring seconds, frames <= 3/255 mean; log-mel <= 3 dB mean (AAC at
  48 kbit/s; measured 2.2 dB on tone + pink noise);
* every bad-media case ends in its ledger status, keep true or false;
* a killed job resumes and writes the same files as an uninterrupted one;
* a device error or a bug stops the job with no row for its video; a failed job keeps the normalized
  files it made (the workflow does not declare them as output) and the rerun trusts one only
  through its journal row;
* GPU decode is opt-in and fails clearly; its frames are close to the CPU path's (torchcodec on CPU);
* ``mcnflow estimate`` prints a cost table for config.yaml with a 1.2M-row manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mcnflow import cli
from mcnflow.core.config import ConfigError, load_config
from mcnflow.core.ledger import FEATURE_COLUMNS, NORMALIZE_COLUMNS, Journal, journal_path, read_ledger
from mcnflow.core.media_probe import probe
from mcnflow.core.plan import Plan
from mcnflow.core.streams import stream
from mcnflow.features.frames import decode_frames
from mcnflow.features.store import ShardReader
from mcnflow.media.decode import AudioTap, DecodeRun, VideoTap, build_command, collect
from mcnflow.media.stage import Outputs, media_settings, media_shard
from mcnflow.normalize import NormalizeSettings, sampler_frame_indices
from shard_utils import h5_contents, leftovers
from test_normalize import download_ledger, inputs, keyframes, rgb_frames  # noqa: F401 - inputs is a fixture
from workflow_utils import copy_workflow, snakemake

REPO = Path(__file__).resolve().parents[1]
SHORT = 64  # short side of the 2D frames in these tests: ResNet-152 on 113x64 frames stays cheap on 2 cores


def stage_settings(keep: bool = True, **normalize) -> dict:
    """config.yaml's media stage settings, scaled down (random weights, small frames, CPU; 2D video only)."""
    config = load_config([REPO / "config.yaml"], {
        "normalize": {"keep": keep, "preset": "ultrafast", **normalize},
        "training": {"video_features": ["2d"], "video_dim": 2048},
        "features": {"video": {"weights": "none", "short_side": SHORT, "batch_size": 3, "decode_workers": 0,
                               "device": "cpu"}}})
    return json.loads(json.dumps(Plan(config).settings("media")))


def norm(keep: bool = True, **changes) -> NormalizeSettings:
    return NormalizeSettings.from_mapping(stage_settings(keep, **changes)["normalize"])


def outputs(root: Path, keep: bool = True, video3d: bool = False) -> Outputs:
    features = {name: (root / name / "shard-00000.h5", root / name / "shard-00000.tsv")
                for name in ("video", "audio", *(["video3d"] if video3d else []))}
    return Outputs(root / "normalize" / "shard-00000.tsv", root / "normalize" / "shard-00000" if keep else None,
                   features)


def reference_frames(path: Path, settings: NormalizeSettings, chain: str, width: int, height: int) -> np.ndarray:
    """The normalization in memory in today's order: resize/pad, setsar, fps=30, then ``chain``."""
    from mcnflow.normalize import scaled_size

    info = probe(path)
    w, h = settings.width, settings.height
    if settings.resize_mode == "pad":
        sw, sh = scaled_size(info.display_size, w, h, cover=False)
        picture = f"scale={sw}:{sh},pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black"
    elif settings.resize_mode == "crop":
        sw, sh = scaled_size(info.display_size, w, h, cover=True)
        picture = f"scale={sw}:{sh},crop={w}:{h}"
    else:
        picture = f"scale={w}:{h}"
    graph = f"{picture},setsar=1,fps=fps={settings.fps},{chain}"
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-an", "-vf", graph,
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def reference_audio(path: Path, rate: int = 16000) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(rate),
                          "-f", "f32le", "pipe:"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, "<f4")


# --- the decode graph ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, mode", [("wide", "pad"), ("portrait", "pad"), ("portrait", "crop"),
                                        ("four_three", "stretch"), ("pal", "pad"), ("anamorphic", "pad"),
                                        ("rotated", "pad")])
def test_decode_once_frames_equal_the_in_memory_normalization_exactly(inputs, name, mode):
    settings = norm(resize_mode=mode)
    info = probe(inputs[name])
    taps = [VideoTap("video", 1, size=(113, 64)), VideoTap("video3d", 24, size=(113, 64), crop=(64, 64, 24, 0)),
            VideoTap("full", 30)]
    if info.has_audio:
        taps.append(AudioTap("audio", 16000))
    run = DecodeRun(info, settings, taps)
    got = collect(run)
    assert np.array_equal(got["video"], reference_frames(inputs[name], settings, "fps=fps=1,scale=113:64", 113, 64))
    assert np.array_equal(got["video3d"], reference_frames(inputs[name], settings,
                                                           "fps=fps=24,scale=113:64,crop=64:64:24:0", 64, 64))
    full = reference_frames(inputs[name], settings, "null", 454, 256)
    assert np.array_equal(got["full"], full) and run.result.normalized_frames == len(full)
    if info.has_audio:
        assert np.array_equal(got["audio"], reference_audio(inputs[name]))
    # frame-rate sampling runs before the resize: only the sampled frames are scaled
    command = build_command(info, settings, taps, {t.name: 3 + i for i, t in enumerate(taps)})
    graph = command[command.index("-filter_complex") + 1]
    assert graph.index("fps=fps=30") < graph.index("fps=fps=1[") < graph.index("scale")


def test_kept_file_holds_the_normalized_frames_with_aligned_keyframes(inputs, tmp_path):
    settings = norm()
    info = probe(inputs["wide"])
    run = DecodeRun(info, settings, [VideoTap("video", 1, size=(198, 112)), AudioTap("audio", 16000)],
                    encode_to=tmp_path / "once.mp4")
    got = collect(run)
    # every frame of the kept file is the in-memory normalization (computed here by plain ffmpeg)
    # after the x264 round trip: close to its own frame, far from its neighbour
    every = rgb_frames(tmp_path / "once.mp4", video_filter="scale=198:112")
    reference = reference_frames(inputs["wide"], settings, "scale=198:112", 198, 112)
    assert every.shape == reference.shape == (60, 112, 198, 3)
    round_trip = np.abs(every.astype(int) - reference.astype(int)).mean()
    assert round_trip <= 3 and np.abs(every[1:].astype(int) - reference[:-1].astype(int)).mean() > 2 * round_trip
    kept = probe(tmp_path / "once.mp4")
    assert keyframes(tmp_path / "once.mp4") == [0, *sampler_frame_indices(kept.n_frames, 30, 1)]
    keys_only = rgb_frames(tmp_path / "once.mp4", ("-skip_frame", "nokey"))
    assert np.array_equal(keys_only, rgb_frames(tmp_path / "once.mp4")) and len(keys_only) == 2
    # the decode-once frames are these frames before the x264 round trip: close, not equal
    difference = np.abs(got["video"].astype(int) - keys_only.astype(int)).mean()
    shifted = np.abs(got["video"][1:].astype(int) - keys_only[:-1].astype(int)).mean()
    assert 0 < difference <= 3 and shifted > 5 * difference


def test_no_normalized_file_is_encoded_with_keep_false(inputs, tmp_path):
    settings = norm(keep=False)
    info = probe(inputs["wide"])
    command = build_command(info, settings, [VideoTap("video", 1, size=(113, 64)), AudioTap("audio", 16000)],
                            {"video": 5, "audio": 6})
    assert "libx264" not in command and "aac" not in command and "null" in command
    assert not any(arg.endswith(".mp4") for arg in command[command.index("-filter_complex"):])


# --- the stage: ledgers, features, bad media ------------------------------------------------------

BAD_MEDIA_STATUSES = {"vid_trunc": "corrupt", "vid_wide": "ok", "vid_gone": "not_downloaded",
                      "vid_empty": "empty_input", "vid_music": "no_video", "vid_missing": "error",
                      "vid_silent": "ok", "vid_cut": "verify_failed", "vid_one": "ok"}


@pytest.fixture(scope="module")
def cut(inputs, tmp_path_factory) -> Path:
    """Moov atom first (faststart), then cut in half: ffprobe reads it, ffmpeg decodes half of it."""
    path = tmp_path_factory.mktemp("cut") / "faststart.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(inputs["wide"]), "-c", "copy",
                    "-movflags", "+faststart", str(path)], check=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def bad_media_downloads(inputs, cut, path: Path) -> Path:
    odd = path.parent / "-i:odd one.mp4"
    shutil.copy(inputs["one_frame"], odd)
    return download_ledger(path, [
        ("vid_trunc", "ok", inputs["truncated"]), ("vid_wide", "ok", inputs["wide"]), ("vid_gone", "unavailable", ""),
        ("vid_empty", "ok", inputs["empty"]), ("vid_music", "ok", inputs["audio_only"]),
        ("vid_missing", "ok", path.parent / "nowhere.mp4"), ("vid_silent", "ok", inputs["silent"]),
        ("vid_cut", "ok", cut), ("vid_one", "ok", odd)])


@pytest.fixture(scope="module", params=[True, False], ids=["keep", "no_keep"])
def bad_media_run(request, inputs, cut, tmp_path_factory):
    keep = request.param
    root = tmp_path_factory.mktemp("media")
    downloads = bad_media_downloads(inputs, cut, root / "download.tsv")
    if keep:  # a file of an earlier download: it must not outlive the row that says the video failed
        (root / "normalize" / "shard-00000").mkdir(parents=True)
        shutil.copy(inputs["wide"], root / "normalize" / "shard-00000" / "vid_trunc.mp4")
    rows = media_shard(downloads, "demo", 0, outputs(root, keep), stage_settings(keep), progress=False)
    return keep, root, rows


def test_every_bad_media_case_ends_in_its_normalize_status(bad_media_run):
    keep, root, rows = bad_media_run
    normalized = {row["video_id"]: row for row in read_ledger(root / "normalize" / "shard-00000.tsv")}
    assert [row["video_id"] for row in rows["normalize"]] == list(BAD_MEDIA_STATUSES)
    assert {vid: row["status"] for vid, row in normalized.items()} == BAD_MEDIA_STATUSES
    assert "moov atom not found" in normalized["vid_trunc"]["message"]
    assert normalized["vid_gone"]["message"] == "download status: unavailable"
    assert "zero-byte" in normalized["vid_empty"]["message"]
    assert "no video stream" in normalized["vid_music"]["message"]
    assert "expected 2" in normalized["vid_cut"]["message"] and "duration" in normalized["vid_cut"]["message"]
    wide = normalized["vid_wide"]
    assert (wide["has_audio"], wide["width"], wide["height"], wide["fps"]) == ("true", "454", "256", "30")
    assert float(wide["duration"]) == pytest.approx(2.0, abs=0.05)
    assert normalized["vid_silent"]["has_audio"] == "false"
    videos = root / "normalize" / "shard-00000"
    if keep:
        assert wide["path"] == str(videos / "vid_wide.mp4") and probe(wide["path"]).n_frames == 60
        assert sorted(p.name for p in videos.iterdir()) == ["vid_one.mp4", "vid_silent.mp4", "vid_wide.mp4"]
    else:
        assert wide["path"] == "" and not videos.exists()  # nothing was encoded
    assert leftovers(root) == []


def test_feature_ledgers_and_files_of_the_bad_media_shard(bad_media_run, inputs):
    keep, root, rows = bad_media_run
    video = {row["video_id"]: (row["status"], row["length"]) for row in read_ledger(root / "video" / "shard-00000.tsv")}
    audio = {row["video_id"]: (row["status"], row["length"]) for row in read_ledger(root / "audio" / "shard-00000.tsv")}
    failed = [vid for vid, status in BAD_MEDIA_STATUSES.items() if status != "ok"]
    assert all(video[vid] == ("no_media", "0") and audio[vid] == ("no_media", "0") for vid in failed)
    assert video["vid_wide"] == ("ok", "2") and video["vid_silent"] == ("ok", "1") and video["vid_one"] == ("ok", "1")
    assert audio["vid_wide"][0] == "ok" and int(audio["vid_wide"][1]) == pytest.approx(201, abs=3)
    assert audio["vid_silent"] == ("no_audio", "0") and audio["vid_one"] == ("no_audio", "0")
    reader = ShardReader(root / "video" / "shard-00000.h5")
    assert reader.video_ids() == ["vid_wide", "vid_silent", "vid_one"]
    assert reader.read("vid_wide").shape == (2, 2048) and reader.read("vid_wide").dtype == np.float16
    attrs = reader.video_attrs("vid_wide")
    assert (attrs["frame_width"], attrs["frame_height"]) == (113, 64) and attrs["source"] == "wide.mp4"
    assert attrs["source_checksum"] == hashlib.sha256(inputs["wide"].read_bytes()).hexdigest()
    assert "one decode" in reader.attrs["decoded_from"] and "NOT pretrained" in reader.attrs["weights"]
    spectrogram = ShardReader(root / "audio" / "shard-00000.h5").read("vid_wide")
    assert spectrogram.shape[0] == 40 and float(spectrogram.max()) == 0.0


# --- decode once vs the two-step path ---------------------------------------------------------------

@pytest.fixture(scope="module")
def moving_with_noise(tmp_path_factory) -> Path:
    """3 s of moving picture, a tone over pink noise: every second and every 10 ms look different."""
    path = tmp_path_factory.mktemp("moving") / "moving.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=s=640x360:r=30:d=3",
                    "-f", "lavfi", "-i", "sine=f=440:r=44100:d=3", "-f", "lavfi", "-i", "anoisesrc=d=3:c=pink:a=0.1",
                    "-filter_complex", "[1:a][2:a]amix=inputs=2[a]", "-map", "0:v", "-map", "[a]", "-ac", "2",
                    "-c:a", "aac", "-c:v", "libx264", "-preset", "ultrafast", "-shortest", str(path)], check=True)
    return path


@pytest.mark.slow
def test_features_from_decode_once_equal_the_two_step_path_within_the_round_trip(moving_with_noise, tmp_path):
    import torch

    from mcnflow.features.audio import decode_audio, spectrogram_of
    from mcnflow.features.video import build_encoder

    settings = stage_settings(keep=True)
    downloads = download_ledger(tmp_path / "download.tsv", [("vid_move", "ok", moving_with_noise)])
    media_shard(downloads, "demo", 0, outputs(tmp_path), settings, progress=False)
    kept = read_ledger(tmp_path / "normalize" / "shard-00000.tsv")[0]["path"]
    # the two-step path: the kept normalized file decoded again by plain ffmpeg, then the same models
    frames = decode_frames(kept, fps=settings["video"]["fps"], short_side=SHORT).frames
    twice = build_encoder(settings["video"])(torch.from_numpy(frames)).numpy().astype(np.float16).astype(np.float32)
    twice_mel = spectrogram_of(decode_audio(kept, 16000), settings["audio"])[0].astype(np.float32)

    once = ShardReader(tmp_path / "video" / "shard-00000.h5").read("vid_move").astype(np.float32)
    assert once.shape == twice.shape == (3, 2048)
    same = np.linalg.norm(once - twice, axis=1)
    neighbours = np.linalg.norm(once[1:] - once[:-1], axis=1)
    assert same.max() <= 0.2 * neighbours.min(), (same, neighbours)  # measured ~0.05

    once_mel = ShardReader(tmp_path / "audio" / "shard-00000.h5").read("vid_move").astype(np.float32)
    assert once_mel.shape == twice_mel.shape
    aligned = np.abs(once_mel - twice_mel).mean()
    shifted = np.abs(once_mel[:, 1:] - twice_mel[:, :-1]).mean()
    assert aligned <= 3.0 and shifted > aligned, (aligned, shifted)  # dB; measured 2.2 vs 3.0


def test_media_cli_with_config_files(inputs, tmp_path):
    downloads = download_ledger(tmp_path / "download.tsv", [("vid_one", "ok", inputs["one_frame"]),
                                                            ("vid_gone", "private", "")])
    overrides = tmp_path / "small.yaml"
    overrides.write_text(json.dumps({"normalize": {"keep": False},
                                     "training": {"video_features": ["2d"], "video_dim": 2048},
                                     "features": {"video": {"weights": "none", "short_side": SHORT,
                                                            "decode_workers": 0, "device": "cpu"}}}))
    argv = ["media", "--download-ledger", str(downloads), "--corpus", "demo", "--shard", "00002",
            "--normalize-ledger", str(tmp_path / "n.tsv"), "--video-output", str(tmp_path / "v.h5"),
            "--video-ledger", str(tmp_path / "v.tsv"), "--audio-output", str(tmp_path / "a.h5"),
            "--audio-ledger", str(tmp_path / "a.tsv"), "--quiet", "--config", str(REPO / "config.yaml"), str(overrides)]
    assert cli.main(argv) == 0
    assert [row["status"] for row in read_ledger(tmp_path / "n.tsv")] == ["ok", "not_downloaded"]
    assert [row["status"] for row in read_ledger(tmp_path / "v.tsv")] == ["ok", "no_media"]
    assert [row["status"] for row in read_ledger(tmp_path / "a.tsv")] == ["no_audio", "no_media"]
    # keep true needs a place for the videos
    assert cli.main([*argv[:-3], "--settings", json.dumps(stage_settings(True))]) == 2


# --- resume ----------------------------------------------------------------------------------------

# The real CLI in a child process that SIGKILLs itself right after the second row of the 2D video
# ledger (its rows come last: ResNet-152 batches across videos)
KILL_AFTER_SECOND_VIDEO_ROW = """
import os, signal, sys
from mcnflow.core.shard_stage import ShardRun
record = ShardRun.record
seen = []
def record_then_die(self, row):
    record(self, row)
    if self.ledger.name == "shard-00000.tsv" and self.ledger.parent.name == "video":
        seen.append(row["video_id"])
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
ShardRun.record = record_then_die
from mcnflow import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def assert_same_files(root: Path, fresh: Path) -> None:
    """A resumed job wrote what an uninterrupted one writes (the normalize ledgers' paths aside)."""
    for name in ("video", "audio"):
        assert h5_contents(root / name / "shard-00000.h5") == h5_contents(fresh / name / "shard-00000.h5")
        assert read_ledger(root / name / "shard-00000.tsv") == read_ledger(fresh / name / "shard-00000.tsv")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "path"} for r in rows]  # noqa: E731
    assert strip(read_ledger(root / "normalize" / "shard-00000.tsv")) == \
        strip(read_ledger(fresh / "normalize" / "shard-00000.tsv"))


def media_argv(downloads: Path, root: Path, settings: dict) -> list[str]:
    out = outputs(root, keep=True)
    return ["media", "--download-ledger", str(downloads), "--corpus", "demo", "--shard", "00000",
            "--normalize-ledger", str(out.normalize_ledger), "--videos-dir", str(out.videos_dir),
            "--video-output", str(out.features["video"][0]), "--video-ledger", str(out.features["video"][1]),
            "--audio-output", str(out.features["audio"][0]), "--audio-ledger", str(out.features["audio"][1]),
            "--quiet", "--settings", json.dumps(settings)]


@pytest.mark.slow
def test_killed_media_job_resumes_and_writes_what_an_uninterrupted_run_writes(inputs, tmp_path, caplog):
    settings = stage_settings(True)
    settings["video"]["decode_workers"] = 1  # a real decode worker process
    downloads = download_ledger(tmp_path / "download.tsv", [
        ("vid_gone", "unavailable", ""), ("vid_wide", "ok", inputs["wide"]), ("vid_silent", "ok", inputs["silent"]),
        ("vid_one", "ok", inputs["one_frame"])])
    root = tmp_path / "killed"
    argv = media_argv(downloads, root, settings)
    done = subprocess.run([sys.executable, "-c", KILL_AFTER_SECOND_VIDEO_ROW, *argv], capture_output=True,
                          text=True, start_new_session=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not (root / "normalize" / "shard-00000.tsv").exists()
    assert (root / "normalize" / "shard-00000" / "vid_wide.mp4").is_file()
    kept_mtime = (root / "normalize" / "shard-00000" / "vid_wide.mp4").stat().st_mtime_ns

    caplog.set_level(logging.INFO, logger="mcnflow")
    assert cli.main(argv) == 0
    messages = [r.getMessage() for r in caplog.records]
    # vid_gone and vid_wide had every row (vid_wide: both features and the mp4) before the kill
    assert "demo/00000: 2 video(s) to decode, 2 kept from an earlier run" in messages, messages
    assert any(m.endswith("computed video 2, audio 0") for m in messages), messages
    assert (root / "normalize" / "shard-00000" / "vid_wide.mp4").stat().st_mtime_ns == kept_mtime
    assert leftovers(root) == []

    fresh = tmp_path / "fresh"
    assert cli.main(media_argv(downloads, fresh, settings)) == 0
    assert_same_files(root, fresh)


# --- the 3D consumer --------------------------------------------------------------------------------

@pytest.mark.slow
def test_3d_features_from_the_same_decode_match_the_two_step_3d_path(moving_with_noise, tmp_path):
    import torch

    from mcnflow.features.resnext3d import ClipEncoder, Recipe3D, ResNeXt3DWeights, resize_and_crop

    config = load_config([REPO / "config.yaml"], {
        "normalize": {"keep": True, "preset": "ultrafast"},  # config.yaml trains on 2D + 3D video
        "features": {"video": {"weights": "none", "short_side": SHORT, "batch_size": 3, "decode_workers": 0,
                               "device": "cpu"},
                     "video3d": {"weights": "none", "blocks": [1, 1, 1, 1], "short_side": 32, "crop": 32,
                                 "batch_size": 2, "decode_workers": 0, "device": "cpu"}}})
    settings = json.loads(json.dumps(Plan(config).settings("media")))
    recipe = Recipe3D(fps=24, short_side=32, crop=32, clip_frames=16)
    encoder = ClipEncoder(ResNeXt3DWeights.random(0, (1, 1, 1, 1)), torch.device("cpu"), True, 2, recipe)
    downloads = download_ledger(tmp_path / "download.tsv", [("vid_move", "ok", moving_with_noise)])
    media_shard(downloads, "demo", 0, outputs(tmp_path, video3d=True), settings, progress=False,
                encoders={"video3d": encoder})
    kept_path = read_ledger(tmp_path / "normalize" / "shard-00000.tsv")[0]["path"]
    # the two-step path: the kept file decoded again by plain ffmpeg (24 fps, short side 32), the same model
    kept_frames = decode_frames(kept_path, 24, 32).frames
    once = ShardReader(tmp_path / "video3d" / "shard-00000.h5").read("vid_move").astype(np.float32)
    twice = encoder.encode(kept_frames).astype(np.float16).astype(np.float32)
    assert once.shape == twice.shape == (5, 2048)  # 72 frames at 24 fps -> ceil(72 / 16) clips
    assert np.abs(once - twice).max() <= 0.02  # a shallow random model: its features barely move anyway
    assert read_ledger(tmp_path / "video3d" / "shard-00000.tsv")[0]["length"] == "5"
    # what the 3D model sees: the same 24 fps frames as decoding the kept file, before the x264 round trip
    from mcnflow.media.consumers import Clips3D

    consumer = Clips3D(stream("video3d"), settings["video3d"], NormalizeSettings.from_mapping(settings["normalize"]))
    frames = collect(DecodeRun(probe(moving_with_noise), consumer.normalize, [consumer.tap()]))["video3d"]
    mine = resize_and_crop(torch.from_numpy(frames), 32, 32).numpy().astype(int)
    kept = resize_and_crop(torch.from_numpy(kept_frames), 32, 32).numpy().astype(int)
    assert mine.shape == kept.shape == (72, 32, 32, 3)
    aligned, shifted = np.abs(mine - kept).mean(), np.abs(mine[1:] - kept[:-1]).mean()
    assert aligned <= 3 and shifted > 2 * aligned, (aligned, shifted)


# --- GPU decode -------------------------------------------------------------------------------------

def test_gpu_decode_is_opt_in_and_refused_where_it_cannot_run():
    settings = stage_settings(keep=True)
    assert media_settings(settings).decode == "cpu"
    with pytest.raises(ConfigError, match="normalize.keep is true"):
        media_settings({**settings, "media": {"decode": "cuda"}})
    from mcnflow.media.gpu import require_gpu_decode

    try:
        import torch
        import torchcodec  # noqa: F401
        has_torchcodec = True
    except Exception:  # noqa: BLE001
        has_torchcodec = False
    if has_torchcodec and torch.cuda.is_available():
        pytest.skip("this machine can decode on the GPU")
    with pytest.raises(ConfigError, match="torchcodec" if not has_torchcodec else "no CUDA device"):
        require_gpu_decode("cuda")


@pytest.mark.parametrize("name, mode", [("wide", "pad"), ("portrait", "crop"), ("pal", "pad"), ("rotated", "pad")])
def test_gpu_path_frames_are_close_to_the_cpu_frames(inputs, name, mode):
    """The GPU path's frame choice and geometry, run with torchcodec's CPU decoder (same code path).
    torchcodec is a test dependency (pyproject's test extra): without it this fails, it is not skipped."""
    from mcnflow.media.gpu import GpuFrameSampler

    settings = norm(keep=False, resize_mode=mode)
    info = probe(inputs[name])
    sampler = GpuFrameSampler(settings, 1.0, (113, 64), device="cpu")
    gpu = sampler.sample(info).numpy()
    cpu = collect(DecodeRun(info, settings, [VideoTap("video", 1, size=(113, 64))]))["video"]
    assert gpu.shape == cpu.shape and not sampler.count_problems(info, len(gpu))
    difference = np.abs(gpu.astype(int) - cpu.astype(int)).mean()
    assert difference <= 4, difference  # another scaler and YUV->RGB conversion, same frames
    if len(cpu) > 1:
        assert np.abs(gpu[1:].astype(int) - cpu[:-1].astype(int)).mean() > 2 * difference


# --- the cost estimate ------------------------------------------------------------------------------

@pytest.mark.slow
def test_estimate_prints_the_cost_of_config_yaml_for_a_full_size_manifest(tmp_path, capsys):
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("bench_plan_scale", REPO / "benchmarks/bench_plan_scale.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    overrides = bench.make_inputs(tmp_path, 1_200_000)
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(overrides))
    rates = tmp_path / "rates.yaml"
    # config.yaml keeps the normalized videos and trains on 2D + 3D video: the keep + 3D decode rate counts
    rates.write_text(yaml.safe_dump({"media_keep_3d_cpu_s_per_min": 3.0, "media_keep_cpu_s_per_min": 99.0,
                                     "logmel_cpu_s_per_min": 0.5,
                                     "machine": "test"}))
    code = cli.main(["estimate", "--config", str(REPO / "config.yaml"), str(tmp_path / "big.yaml"),
                     "--rates", str(rates), "--results", str(tmp_path / "results"),
                     "--profile", str(REPO / "profiles/slurm")])
    assert code == 0
    text = capsys.readouterr().out
    assert "howto100m: 1,200,000 videos" in text
    assert "measured (test)" in text and "default" in text  # measured rates and labelled defaults
    assert "6.5 min" in text
    for stage in ("download", "media", "train", "checkpoints", "video features", "audio features",
                  "normalized videos"):
        assert stage in text, stage
    # media: (3.0 decode + 0.5 log-mel) CPU-s per minute of video, for the surviving HowTo100M and
    # YouCook2 videos (75%) and all 1000 local MSR-VTT clips, 6.5 min each, in core-hours
    videos = (1_200_000 + 457) * 0.75 + 1000
    media_line = next(line for line in text.splitlines() if line.startswith("media "))
    assert f"{videos * 6.5 * 3.5 / 3600:,.0f}" in media_line, media_line
    train_line = next(line for line in text.splitlines() if line.startswith("train "))
    config = load_config([REPO / "config.yaml"])
    branches = len(Plan(config).branches())
    steps = branches * config["training"]["epochs"] * (900_000 // config["training"]["batch_size"])
    assert f"{steps:,} steps over {branches} branch(es)" in train_line and "FLOP estimate" in train_line
    assert "download wall-clock (profile" in text and " days for " in text  # the waits in days and GPU-hours
    assert "training GPU-hours per experiment" in text
    assert "video3d features" in text  # config.yaml trains on 2D + 3D video


def test_gpu_decode_stage_path_with_the_cpu_build_of_torchcodec(inputs, monkeypatch, tmp_path):
    """media.decode: cuda end to end through the stage, its sampler run on the CPU (same code path:
    torchcodec decode, frame choice, geometry, verification, ledgers); the frames land close to the CPU's."""
    from mcnflow.media import gpu

    monkeypatch.setattr(gpu.GpuFrameSampler, "for_settings",
                        classmethod(lambda cls, settings, tap, device="cuda": cls(settings, float(tap.fps), tap.size, "cpu")))
    settings = stage_settings(keep=False)
    gpu_settings = {**settings, "media": {"decode": "cuda"}}
    downloads = download_ledger(tmp_path / "download.tsv", [
        ("vid_wide", "ok", inputs["wide"]), ("vid_trunc", "ok", inputs["truncated"]), ("vid_silent", "ok", inputs["silent"])])
    rows = media_shard(downloads, "demo", 0, outputs(tmp_path / "gpu", keep=False), gpu_settings, progress=False)
    assert [r["status"] for r in rows["normalize"]] == ["ok", "corrupt", "ok"]
    assert [(r["status"], r["length"]) for r in rows["video"]] == [("ok", "2"), ("no_media", "0"), ("ok", "1")]
    assert [r["status"] for r in rows["audio"]] == ["ok", "no_media", "no_audio"]
    media_shard(downloads, "demo", 0, outputs(tmp_path / "cpu", keep=False), settings, progress=False)
    on_gpu = ShardReader(tmp_path / "gpu" / "video" / "shard-00000.h5")
    on_cpu = ShardReader(tmp_path / "cpu" / "video" / "shard-00000.h5")
    assert on_gpu.attrs["decode_device"] == "cuda" and on_cpu.attrs["decode_device"] == "cpu"
    same = np.linalg.norm(on_gpu.read("vid_wide").astype(np.float32) - on_cpu.read("vid_wide").astype(np.float32), axis=1)
    cpu_rows = on_cpu.read("vid_wide").astype(np.float32)
    assert same.max() <= 0.5 * np.linalg.norm(cpu_rows[1] - cpu_rows[0]), same


# --- failures: only input problems are rows; a device error or a bug stops the job ------------------

@pytest.fixture(scope="module")
def video_encoder():
    """The 2D encoder of stage_settings(), built once (a ResNet-152 random init takes seconds)."""
    from mcnflow.features.video import build_encoder

    return build_encoder(stage_settings()["video"])


class FailingEncoder:
    """The real encoder, but its call number ``fail_at`` raises ``error`` (as a failing GPU would)."""

    def __init__(self, encoder, error: BaseException, fail_at: int = 1):
        self.encoder, self.error, self.left = encoder, error, fail_at

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def __call__(self, frames):
        self.left -= 1
        if self.left == 0:
            raise self.error
        return self.encoder(frames)


def journals(root: Path) -> dict[str, dict[str, dict]]:
    """The journal rows a failed job left, per ledger: video id -> row."""
    ledgers = {"normalize": (root / "normalize" / "shard-00000.tsv", NORMALIZE_COLUMNS),
               **{name: (root / name / "shard-00000.tsv", FEATURE_COLUMNS) for name in ("video", "audio")}}
    return {name: Journal(journal_path(ledger), columns).read() for name, (ledger, columns) in ledgers.items()}


def assert_failed_without_rows(root: Path, video_id: str) -> dict[str, dict[str, dict]]:
    """No ledger was written, the video has no row anywhere, and no row of any video is a failure."""
    assert not any((root / name / "shard-00000.tsv").exists() for name in ("normalize", "video", "audio"))
    left = journals(root)
    assert all(video_id not in rows for rows in left.values()), left
    assert {row["status"] for rows in left.values() for row in rows.values()} <= {"ok", "no_audio"}, left
    return left


@pytest.mark.parametrize("error, status", [
    (RuntimeError("CUDA error: an illegal memory access was encountered"), None),
    (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"), None),
    ("out of memory", None),  # torch.cuda.OutOfMemoryError, made in the test (torch is imported lazily)
    (TypeError("sample() takes 2 positional arguments but 3 were given"), None),  # a bug
    (RuntimeError("Requested next frame while there are no more frames left to decode."), "corrupt"),
], ids=["cuda", "cudnn", "oom", "bug", "input"])
def test_gpu_decode_failures_are_rows_only_when_the_input_is_bad(inputs, monkeypatch, tmp_path, error, status):
    """media/stage.py turned every GPU decode exception into a permanent ``corrupt`` row; now a device
    error or a bug stops the job and only torchcodec's complaint about the file is the video's row."""
    import torch

    from mcnflow.media import gpu

    if error == "out of memory":
        error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setattr(gpu.GpuFrameSampler, "for_settings",
                        classmethod(lambda cls, settings, tap, device="cuda": cls(settings, float(tap.fps), tap.size, "cpu")))
    real_sample = gpu.GpuFrameSampler.sample

    def sample(self, info):
        if Path(info.path).name == "silent.mp4":
            raise error
        return real_sample(self, info)

    monkeypatch.setattr(gpu.GpuFrameSampler, "sample", sample)
    settings = {**stage_settings(keep=False), "media": {"decode": "cuda"}}
    downloads = download_ledger(tmp_path / "download.tsv", [
        ("vid_wide", "ok", inputs["wide"]), ("vid_silent", "ok", inputs["silent"]), ("vid_one", "ok", inputs["one_frame"])])
    root = tmp_path / "out"
    if status is None:
        with pytest.raises(type(error), match=re.escape(str(error))):
            media_shard(downloads, "demo", 0, outputs(root, keep=False), settings, progress=False)
        left = assert_failed_without_rows(root, "vid_silent")
        assert left["normalize"]["vid_wide"]["status"] == "ok"  # what was finished stays journaled for the rerun
    else:
        rows = media_shard(downloads, "demo", 0, outputs(root, keep=False), settings, progress=False)
        assert [r["status"] for r in rows["normalize"]] == ["ok", status, "ok"]
        assert rows["normalize"][1]["message"].startswith("GPU decode: RuntimeError: Requested next frame")


def test_a_device_error_in_the_model_stops_the_job_with_no_row(inputs, tmp_path, video_encoder):
    downloads = download_ledger(tmp_path / "download.tsv", [("vid_wide", "ok", inputs["wide"]),
                                                            ("vid_one", "ok", inputs["one_frame"])])
    failing = FailingEncoder(video_encoder, RuntimeError("CUDA error: device-side assert triggered"))
    with pytest.raises(RuntimeError, match="device-side assert"):
        media_shard(downloads, "demo", 0, outputs(tmp_path, keep=False), stage_settings(keep=False), progress=False,
                    encoders={"video": failing})
    # the first (and only) batch holds both videos' frames: neither has a 2D row
    assert assert_failed_without_rows(tmp_path, "vid_one")["video"] == {}


def test_a_bug_in_a_consumer_stops_the_job_with_no_row(inputs, tmp_path, monkeypatch, video_encoder):
    """media/stage.py turned any exception in a decode worker into ``error`` rows and exited 0."""
    from mcnflow.media.consumers import LogMel

    def broken(self, data):
        raise TypeError("spectrogram_of() got an unexpected keyword argument 'hop'")

    monkeypatch.setattr(LogMel, "prepare", broken)
    downloads = download_ledger(tmp_path / "download.tsv", [("vid_silent", "ok", inputs["silent"]),
                                                            ("vid_wide", "ok", inputs["wide"])])
    with pytest.raises(TypeError, match="unexpected keyword argument 'hop'"):
        media_shard(downloads, "demo", 0, outputs(tmp_path, keep=False), stage_settings(keep=False), progress=False,
                    encoders={"video": video_encoder})
    left = assert_failed_without_rows(tmp_path, "vid_wide")
    assert left["normalize"]["vid_silent"]["status"] == "ok"  # no audio: LogMel.prepare never ran for it


# The real CLI in a child process, a real decode worker process, and a bug in the worker's consumer code
BROKEN_CONSUMER_CLI = """
import sys
from mcnflow.media.consumers import LogMel
def broken(self, data):
    raise TypeError("spectrogram_of() got an unexpected keyword argument 'hop'")
LogMel.prepare = broken
from mcnflow import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_bug_in_a_decode_worker_process_fails_the_cli_with_a_non_zero_exit(inputs, tmp_path):
    settings = stage_settings(keep=True)
    settings["video"]["decode_workers"] = 1
    downloads = download_ledger(tmp_path / "download.tsv", [("vid_wide", "ok", inputs["wide"])])
    done = subprocess.run([sys.executable, "-c", BROKEN_CONSUMER_CLI, *media_argv(downloads, tmp_path, settings)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "unexpected keyword argument 'hop'" in done.stderr, done.stderr[-2000:]
    assert_failed_without_rows(tmp_path, "vid_wide")


@pytest.mark.slow
def test_a_failed_job_keeps_its_normalized_files_and_the_rerun_trusts_them_only_through_the_journal(
        inputs, tmp_path, caplog, video_encoder):
    videos = tmp_path / "normalize" / "shard-00000"
    downloads = download_ledger(tmp_path / "download.tsv", [
        ("vid_wide", "ok", inputs["wide"]), ("vid_one", "ok", inputs["one_frame"]),
        ("vid_silent", "ok", inputs["silent"]), ("vid_pal", "ok", inputs["pal"])])
    settings = stage_settings(keep=True)
    # 2D batches of 3 frames: wide (2) + one (1) run first; silent (1) + pal (2) make the second, which fails
    failing = FailingEncoder(video_encoder, RuntimeError("CUDA error: an illegal memory access was encountered"), 2)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        media_shard(downloads, "demo", 0, outputs(tmp_path), settings, progress=False, encoders={"video": failing})
    left = assert_failed_without_rows(tmp_path, "vid_pal")
    assert sorted(left["normalize"]) == ["vid_one", "vid_silent", "vid_wide"] and left["video"] == {}
    # every file made before the failure is there, vid_pal's too (encoded, but never journaled)
    assert sorted(p.name for p in videos.iterdir()) == ["vid_one.mp4", "vid_pal.mp4", "vid_silent.mp4", "vid_wide.mp4"]

    # what the rerun finds: journaled files (one damaged since), a file without a row (here even the
    # wrong picture: vid_silent's), the temporary of a killed encode and another shard's temporary
    made = {name: (videos / f"{name}.mp4").stat().st_mtime_ns for name in ("vid_wide", "vid_silent")}
    (videos / "vid_one.mp4").write_bytes((videos / "vid_one.mp4").read_bytes()[:100])
    shutil.copy(videos / "vid_silent.mp4", videos / "vid_pal.mp4")
    own_temp, other_temp = videos / ".tmp-vid_pal.mp4.k1lled00", videos / ".tmp-vid_other.mp4.runn1ng0"
    for temp in (own_temp, other_temp):
        temp.write_bytes(b"partial")
    caplog.set_level(logging.INFO, logger="mcnflow")
    rows = media_shard(downloads, "demo", 0, outputs(tmp_path), settings, progress=False,
                       encoders={"video": video_encoder})
    messages = [r.getMessage() for r in caplog.records]
    assert "demo/0: 4 video(s) to decode, 0 kept from an earlier run" in messages  # no 2D row was kept
    assert any("vid_one: normalizing again" in m for m in messages), messages
    assert {name: (videos / f"{name}.mp4").stat().st_mtime_ns for name in made} == made  # decoded, not encoded again
    assert probe(videos / "vid_one.mp4").n_frames == 1
    pal = probe(videos / "vid_pal.mp4")
    assert pal.has_audio and pal.duration == pytest.approx(2.0, abs=0.1)  # made again from its own download
    assert not own_temp.exists() and other_temp.read_bytes() == b"partial"
    other_temp.unlink()
    assert leftovers(tmp_path) == [] and [r["status"] for r in rows["normalize"]] == ["ok"] * 4

    fresh = tmp_path / "fresh"
    media_shard(downloads, "demo", 0, outputs(fresh), settings, progress=False, encoders={"video": video_encoder})
    assert_same_files(tmp_path, fresh)


def test_the_workflow_does_not_declare_the_kept_videos_as_output(tmp_path):
    """Snakemake deletes the outputs of a failed job: the normalized videos must not be one."""
    workdir = copy_workflow(tmp_path)
    dry = snakemake(workdir, "-n", "-p").stdout  # the demo keeps the normalized videos (config.yaml)
    jobs = [block for block in dry.split("\n\n") if "rule media_shard:" in block]
    assert jobs
    for job in jobs:
        output = next(line for line in job.splitlines() if line.strip().startswith("output:"))
        corpus, shard = re.search(r"results/normalize/(\w+)/shard-(\d+)\.tsv", output).groups()
        videos = f"results/normalize/{corpus}/shard-{shard}"
        assert f"{videos}," not in output + "," and f"{videos} " not in output, output
        assert f"--videos-dir {videos} " in dry, videos
