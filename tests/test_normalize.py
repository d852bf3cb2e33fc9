"""The normalization (what ``mcnflow media`` encodes, :func:`normalize_video` runs its graph on one file):
exact output format for every input shape, the ledger status of every bad input, ffmpeg failures
split into input problems (rows) and machine failures (the job stops), trust in a kept file.

The shard job itself (ledger rows, resume, failed jobs) is tested in test_media.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mcnflow.core.config import ConfigError
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, write_ledger
from mcnflow.core.media_probe import probe
from mcnflow.normalize import (EnvironmentFailure, NormalizeFailure, NormalizeSettings, ffmpeg_failure,
                               normalize_video, sampler_frame_indices, sampler_frame_indices_expr, scaled_size,
                               trusted_row, verify_output)

# config.yaml's normalize section with the fastest preset (tests check format, not quality).
SETTINGS = dict(width=454, height=256, fps=30, audio_rate=16000, resize_mode="pad", video_codec="libx264",
                preset="ultrafast", crf=23, audio_bitrate="48k", threads=1, duration_tolerance=0.5, keep=True,
                align_keyframes=True, sample_fps=1)


def settings(**changes) -> NormalizeSettings:
    return NormalizeSettings.from_mapping({**SETTINGS, **changes})


def ffmpeg_make(path: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, "-c:v", "libx264", "-preset", "ultrafast",
                    str(path)], check=True)
    return path


def with_tone(seconds: float, rate: int = 44100) -> list[str]:
    return ["-f", "lavfi", "-i", f"sine=f=440:r={rate}:d={seconds}", "-ac", "2", "-c:a", "aac", "-shortest"]


# White picture with a black band over the top tenth: bars, crops and stretches are all visible.
def banded(size: str, seconds: float = 1) -> list[str]:
    width, height = (int(v) for v in size.split("x"))
    return ["-f", "lavfi", "-i",
            f"color=white:s={size}:r=30:d={seconds},drawbox=x=0:y=0:w={width}:h={height // 10}:color=black:t=fill"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    made = {
        "wide": ffmpeg_make(root / "wide.mp4", "-f", "lavfi", "-i", "testsrc2=s=640x360:r=30:d=2", *with_tone(2)),
        "portrait": ffmpeg_make(root / "portrait.mp4", *banded("300x400")),
        "four_three": ffmpeg_make(root / "four_three.mp4", *banded("480x360")),
        "white_wide": ffmpeg_make(root / "white_wide.mp4", "-f", "lavfi", "-i", "color=white:s=640x360:r=30:d=0.5"),
        "anamorphic": ffmpeg_make(root / "anamorphic.mp4", "-f", "lavfi", "-i",
                                  "color=white:s=320x360:r=30:d=0.5,setsar=2"),
        "landscape": ffmpeg_make(root / "landscape.mp4", *banded("400x300", 0.5)),
        "pal": ffmpeg_make(root / "pal.mp4", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=2", *with_tone(2, 48000)),
        "one_frame": ffmpeg_make(root / "one_frame.mp4", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25",
                                 "-frames:v", "1"),
        "silent": ffmpeg_make(root / "silent.mp4", "-f", "lavfi", "-i", "testsrc2=s=320x180:r=30:d=1"),
    }
    # Stored 400x300 landscape, shown turned by 90 degrees: a 300x400 portrait. (ffmpeg 5 writes the
    # rotate tag only when stream-copying.)
    made["rotated"] = root / "rotated.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(made["landscape"]), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(made["rotated"])], check=True)
    audio_only = root / "audio_only.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac",
                    str(audio_only)], check=True)
    made["audio_only"] = audio_only
    data = made["wide"].read_bytes()
    made["truncated"] = root / "truncated.mp4"
    made["truncated"].write_bytes(data[: len(data) // 2])
    made["empty"] = root / "empty.mp4"
    made["empty"].touch()
    return made


def first_frame(path: Path, width: int = 454, height: int = 256) -> np.ndarray:
    """The first frame as a (height, width) grey-level array."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "gray", "pipe:"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, width)


BLACK, WHITE = 40, 180  # grey-level thresholds (H.264 + limited range keep values off 0 and 255)


def test_wide_video_with_audio(inputs, tmp_path):
    out = normalize_video(inputs["wide"], tmp_path / "wide.mp4", settings())
    assert out.path == str(tmp_path / "wide.mp4")
    info = probe(tmp_path / "wide.mp4")
    assert (info.width, info.height, info.frame_rate) == (454, 256, "30/1")
    assert info.sample_aspect_ratio == 1 and info.pix_fmt == "yuv420p" and info.video_codec == "h264"
    assert info.n_frames == 60
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert (info.has_audio, info.audio_codec, info.audio_rate, info.audio_channels) == (True, "aac", 16000, 1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("name", ["portrait", "four_three"])
@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
def test_every_aspect_ratio_becomes_the_configured_size(inputs, tmp_path, name, mode):
    output = tmp_path / f"{name}.mp4"
    normalize_video(inputs[name], output, settings(resize_mode=mode))
    info = probe(output)
    assert (info.width, info.height, info.fps) == (454, 256, 30.0)
    frame = first_frame(output)
    middle = frame[128:]  # below the black band of the input
    if mode == "pad":
        # Narrower than 16:9: black bars left and right, picture in the centre.
        assert middle[:, :20].max() < BLACK and middle[:, -20:].max() < BLACK
        assert middle[:, 200:254].min() > WHITE
    elif mode == "crop":
        # Taller than 16:9: the top (with the band) is cropped away and nothing is black.
        assert frame.min() > WHITE
    else:
        # Stretched: the full picture, band included, covers the frame edge to edge.
        assert frame[:5].max() < BLACK
        assert middle.min() > WHITE


@pytest.mark.parametrize("name", ["white_wide", "anamorphic"])
def test_16_9_video_fills_the_padded_frame(inputs, tmp_path, name):
    # 640x360, and 320x360 with 2:1 pixels (displayed 16:9): no letterbox bars, not even 1-pixel ones.
    normalize_video(inputs[name], tmp_path / "a.mp4", settings(resize_mode="pad"))
    assert first_frame(tmp_path / "a.mp4").min() > WHITE


def test_rotated_video_is_padded_as_displayed(inputs, tmp_path):
    assert probe(inputs["rotated"]).rotation in (90, 270)
    out = normalize_video(inputs["rotated"], tmp_path / "r.mp4", settings(resize_mode="pad"))
    assert out.rotation == 0 and (out.width, out.height) == (454, 256)
    frame = first_frame(tmp_path / "r.mp4")
    # Shown as a 300x400 portrait: bars left and right (not a stretched landscape).
    assert frame[:, :100].max() < BLACK and frame[:, -100:].max() < BLACK
    assert frame[100:200, 200:254].min() > WHITE


@pytest.mark.parametrize("display, cover, expected", [
    ((640, 360), False, (454, 256)),   # 16:9: the nearest even height is the full 256
    ((640, 360), True, (456, 256)),
    ((480, 360), False, (342, 256)),
    ((480, 360), True, (454, 340)),
    ((300, 400), False, (192, 256)),
    ((300, 400), True, (454, 606)),
    ((1000, 10), False, (454, 4)),
])
def test_scaled_size(display, cover, expected):
    assert scaled_size(display, 454, 256, cover) == expected


def test_25_fps_becomes_30_fps_and_keeps_its_duration(inputs, tmp_path):
    normalize_video(inputs["pal"], tmp_path / "pal.mp4", settings())
    info = probe(tmp_path / "pal.mp4")
    assert info.frame_rate == "30/1" and info.n_frames == 60
    assert info.video_duration == pytest.approx(2.0, abs=1 / 30)
    assert (info.audio_rate, info.audio_channels) == (16000, 1)


def test_one_frame_video(inputs, tmp_path):
    out = normalize_video(inputs["one_frame"], tmp_path / "one.mp4", settings())
    assert out.n_frames == 1 and (out.width, out.height) == (454, 256) and not out.has_audio


def test_video_without_audio_stays_silent(inputs, tmp_path):
    out = normalize_video(inputs["silent"], tmp_path / "silent.mp4", settings())
    assert not out.has_audio
    assert not probe(tmp_path / "silent.mp4").has_audio  # no invented silent track


@pytest.mark.parametrize("name, status, message", [
    ("truncated", "corrupt", "moov atom not found"),
    ("empty", "empty_input", "zero-byte"),
    ("audio_only", "no_video", "no video stream"),
])
def test_bad_inputs_raise_with_their_status(inputs, tmp_path, name, status, message):
    with pytest.raises(NormalizeFailure, match=message) as caught:
        normalize_video(inputs[name], tmp_path / "out.mp4", settings())
    assert caught.value.status == status
    assert list(tmp_path.iterdir()) == []  # neither an output nor a temporary file


def test_decodable_but_short_output_is_verify_failed(inputs, tmp_path):
    # Moov atom first (faststart), then cut: ffprobe reads it, ffmpeg decodes half, verification objects.
    faststart = tmp_path / "faststart.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(inputs["wide"]), "-c", "copy",
                    "-movflags", "+faststart", str(faststart)], check=True)
    data = faststart.read_bytes()
    faststart.write_bytes(data[: len(data) // 2])
    with pytest.raises(NormalizeFailure, match=r"duration .* expected 2") as caught:
        normalize_video(faststart, tmp_path / "out" / "x.mp4", settings())
    assert caught.value.status == "verify_failed"
    assert list((tmp_path / "out").iterdir()) == []


def test_verify_output_names_what_differs(inputs):
    good = probe(inputs["wide"])  # 640x360, 30 fps, 44.1 kHz stereo
    problems = verify_output(good, settings(), duration=2.0, has_audio=True)
    assert any("size 640x360, expected 454x256" in p for p in problems)
    assert any("44100 Hz x 2 channel(s)" in p for p in problems)
    assert not any("frame rate" in p or "duration" in p for p in problems)
    assert any("duration" in p for p in verify_output(good, settings(), duration=5.0, has_audio=True))
    assert any("frame rate 30/1" in p for p in verify_output(good, settings(fps=25), duration=2.0, has_audio=True))
    assert any("input has none" in p for p in verify_output(good, settings(), duration=2.0, has_audio=False))


def test_ffmpeg_failures_split_into_input_problems_and_machine_failures(tmp_path):
    corrupt = ffmpeg_failure(b"[h264 @ 0x1] Invalid NAL unit size\nError while decoding stream #0:0: "
                             b"Invalid data found when processing input\n", tmp_path / "x.mp4")
    assert corrupt.status == "corrupt" and corrupt.message == "[h264] Invalid NAL unit size"
    other = ffmpeg_failure(b"[mov,mp4 @ 0x2] stream 1, offset 0x30: unexpected packet layout\nConversion failed!\n",
                           tmp_path / "x.mp4")
    assert other.status == "error" and "unexpected packet layout" in other.message  # retried by a rerun
    # a full disk is no fact about the video: no row, the job stops
    with pytest.raises(EnvironmentFailure, match="No space left on device"):
        ffmpeg_failure(b"[libx264 @ 0x2] Error: No space left on device\nConversion failed!\n", tmp_path / "x.mp4")


def test_settings_must_be_complete_and_allowed():
    with pytest.raises(ConfigError, match="crf"):
        NormalizeSettings.from_mapping({k: v for k, v in SETTINGS.items() if k != "crf"})
    with pytest.raises(ConfigError, match="resize_mode"):
        settings(resize_mode="zoom")


def download_ledger(path: Path, rows: list[tuple[str, str, Path | str]]) -> Path:
    write_ledger(path, [dict(video_id=vid, status=status, path=str(src) if status == "ok" else "",
                             message="", attempts=1) for vid, status, src in rows], DOWNLOAD_COLUMNS)
    return path


def test_paths_that_look_like_options_or_protocols(inputs, tmp_path):
    odd = tmp_path / "-i:odd name.mp4"
    odd.write_bytes(inputs["one_frame"].read_bytes())
    out = normalize_video(odd, tmp_path / "-out:put.mp4", settings())
    assert out.n_frames == 1 and (tmp_path / "-out:put.mp4").is_file()


def test_a_kept_file_is_trusted_only_while_it_is_the_file_its_row_describes(inputs, tmp_path):
    kept = tmp_path / "vid_wide.mp4"
    made = normalize_video(inputs["wide"], kept, settings())
    row = dict(video_id="vid_wide", status="ok", message="", has_audio="true", duration=str(made.duration),
               width="454", height="256", fps="30", path=str(kept))
    assert trusted_row(row, kept, settings())
    assert not trusted_row({**row, "has_audio": "false"}, kept, settings())  # another video's row
    assert not trusted_row({**row, "duration": str(made.duration + 0.5)}, kept, settings())
    assert not trusted_row(row, kept, settings(width=320))  # made with other settings
    kept.write_bytes(kept.read_bytes()[:1000])  # damaged
    assert not trusted_row(row, kept, settings())
    kept.unlink()
    assert not trusted_row(row, kept, settings())
    assert trusted_row(row, None, settings())  # normalize.keep false: nothing to check
    # failures stand (the same input fails the same way), except error: its cause may have passed
    assert trusted_row(dict(video_id="x", status="corrupt", message="moov atom not found"), kept, settings())
    assert not trusted_row(dict(video_id="x", status="error", message="ffmpeg failed: ?"), kept, settings())


# --- keyframes aligned to the 1 fps sampler --------------------------------------------------------

def frame_index_video(path: Path, rate: str, frames: int) -> Path:
    """Lossless grey frames whose value is their own index (ffv1): what a filter keeps is readable."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"nullsrc=s=16x16:r={rate},format=gray,geq=lum='N'", "-frames:v", str(frames),
                    "-c:v", "ffv1", str(path)], check=True)
    return path


def kept_indices(path: Path, video_filter: str, extra: tuple[str, ...] = ()) -> list[int]:
    # passthrough: the muxer must not duplicate frames to fill the gaps select leaves
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *extra, "-i", str(path), "-vf", video_filter,
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:"],
                         check=True, capture_output=True).stdout
    return [raw[i * 256] for i in range(len(raw) // 256)]


@pytest.mark.parametrize("rate, sample_fps", [(30, 1), (30, 2), (25, 1), (30, 0.5), (24, 1.5)])
def test_sampler_indices_are_the_frames_ffmpegs_fps_filter_keeps(tmp_path, rate, sample_fps):
    video = frame_index_video(tmp_path / "index.mkv", str(rate), 250)
    # fps={rate} first, as in the normalization: exact 1/rate timestamps (matroska rounds them to ms)
    assert kept_indices(video, f"fps={rate},fps={sample_fps}") == sampler_frame_indices(250, rate, sample_fps)
    # and ffmpeg's own expression evaluator picks the same frames (what -force_key_frames sees)
    picked = kept_indices(video, f"select='{sampler_frame_indices_expr(rate, sample_fps)}'")
    assert picked == sampler_frame_indices(250, rate, sample_fps)
    assert sampler_frame_indices(90, 30, 1) == [14, 44, 74]  # measured: the last frame that rounds to k


def keyframes(path: Path) -> list[int]:
    flags = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=key_frame",
                            "-of", "csv=p=0", str(path)], check=True, capture_output=True, text=True).stdout.split()
    return [i for i, flag in enumerate(flags) if flag.strip(",") == "1"]


def rgb_frames(path: Path, extra: tuple[str, ...] = (), video_filter: str = "fps=1,scale=198:112") -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *extra, "-i", str(path), "-an", "-vf", video_filter,
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 112, 198, 3)


@pytest.mark.parametrize("name", ["wide", "pal"])
def test_kept_videos_have_keyframes_exactly_at_the_sampled_frames(inputs, tmp_path, name):
    aligned = normalize_video(inputs[name], tmp_path / "aligned.mp4", settings())
    assert keyframes(tmp_path / "aligned.mp4") == [0, *sampler_frame_indices(aligned.n_frames, 30, 1)]
    full = rgb_frames(tmp_path / "aligned.mp4")
    keys_only = rgb_frames(tmp_path / "aligned.mp4", ("-skip_frame", "nokey"))
    assert full.shape[0] == 2 and np.array_equal(full, keys_only)  # bit for bit
    # x264's own GOPs: the keyframe-only decode misses the sampled frames (so the check above can fail)
    normalize_video(inputs[name], tmp_path / "plain.mp4", settings(align_keyframes=False))
    assert keyframes(tmp_path / "plain.mp4") == [0]
    assert rgb_frames(tmp_path / "plain.mp4", ("-skip_frame", "nokey")).shape[0] != full.shape[0]
