"""media_probe: the facts ffprobe reports about small lavfi-made files, and clear errors on bad input."""

from __future__ import annotations

import subprocess
from fractions import Fraction

import pytest

from mcnflow.core.media_probe import (MediaProbeError, last_meaningful_line, media_info_from_ffprobe, parse_rate,
                                 probe)


def ffmpeg_make(path, *args):
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    return {
        "av": ffmpeg_make(root / "av.mp4", "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=1",
                          "-f", "lavfi", "-i", "sine=f=440:r=22050:d=1", "-ac", "2",
                          "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest"),
        "video_only": ffmpeg_make(root / "video_only.mp4", "-f", "lavfi", "-i",
                                  "testsrc2=s=160x90:r=30000/1001:d=1", "-c:v", "libx264", "-preset", "ultrafast"),
        "anamorphic": ffmpeg_make(root / "anamorphic.mp4", "-f", "lavfi", "-i",
                                  "color=white:s=320x360:r=30:d=0.5,setsar=2", "-c:v", "libx264",
                                  "-preset", "ultrafast"),
        "audio_only": ffmpeg_make(root / "audio_only.m4a", "-f", "lavfi", "-i", "sine=r=16000:d=1",
                                  "-c:a", "aac"),
    }


def test_video_with_audio(media):
    info = probe(media["av"])
    assert info.has_video and info.has_audio
    assert (info.width, info.height) == (320, 240)
    assert info.frame_rate == "25/1" and info.fps == 25.0
    assert info.n_frames == 25
    assert info.video_codec == "h264" and info.pix_fmt is not None
    assert info.sample_aspect_ratio in (None, Fraction(1))
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert info.video_duration == pytest.approx(1.0, abs=0.05)
    assert (info.audio_codec, info.audio_rate, info.audio_channels) == ("aac", 22050, 2)
    assert {info.video_stream_index, info.audio_stream_index} == {0, 1}
    assert info.size == media["av"].stat().st_size


def test_video_without_audio_and_ntsc_rate(media):
    info = probe(media["video_only"])
    assert info.has_video and not info.has_audio
    assert info.audio_stream_index is None and info.audio_rate is None and info.audio_channels is None
    assert info.frame_rate == "30000/1001"
    assert info.fps == pytest.approx(29.97, abs=0.001)


def test_anamorphic_pixels(media):
    info = probe(media["anamorphic"])
    assert info.sample_aspect_ratio == Fraction(2)
    assert (info.width, info.height) == (320, 360)


def test_audio_only(media):
    info = probe(media["audio_only"])
    assert not info.has_video and info.has_audio
    assert info.width is None and info.fps is None and info.video_stream_index is None
    assert (info.audio_rate, info.audio_channels) == (16000, 1)
    assert info.duration == pytest.approx(1.0, abs=0.1)


def test_garbage_missing_and_empty_files_raise(tmp_path, media):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video\n" * 300)
    with pytest.raises(MediaProbeError, match="garbage.mp4") as caught:
        probe(garbage)
    assert caught.value.reason and "0x" not in caught.value.reason  # addresses are stripped

    truncated = tmp_path / "truncated.mp4"
    data = media["av"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # the moov atom is at the end: cut off
    with pytest.raises(MediaProbeError, match="moov atom not found"):
        probe(truncated)

    with pytest.raises(MediaProbeError, match="no such file"):
        probe(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(MediaProbeError, match="empty"):
        probe(empty)


def test_cover_art_is_not_a_video_stream(tmp_path):
    report = {
        "format": {"format_name": "mov,mp4", "duration": "12.5", "size": "1000"},
        "streams": [
            {"index": 0, "codec_type": "audio", "codec_name": "aac", "sample_rate": "44100", "channels": 2},
            {"index": 1, "codec_type": "video", "codec_name": "mjpeg", "width": 300, "height": 300,
             "avg_frame_rate": "0/0", "r_frame_rate": "90000/1", "disposition": {"attached_pic": 1}},
        ],
    }
    info = media_info_from_ffprobe(tmp_path / "song.m4a", report)
    assert not info.has_video and info.has_audio
    assert info.duration == 12.5 and info.audio_channels == 2


def test_rate_falls_back_to_r_frame_rate_and_duration_to_streams(tmp_path):
    report = {
        "format": {"format_name": "matroska,webm", "size": "10"},
        "streams": [{"index": 0, "codec_type": "video", "codec_name": "vp9", "width": 640, "height": 360,
                     "avg_frame_rate": "0/0", "r_frame_rate": "25/1", "duration": "3.5"}],
    }
    info = media_info_from_ffprobe(tmp_path / "x.webm", report)
    assert info.fps == 25.0 and info.frame_rate == "25/1"
    assert info.duration == 3.5 and info.n_frames is None


def test_parse_rate():
    assert parse_rate("30000/1001") == Fraction(30000, 1001)
    assert parse_rate("1:1") == Fraction(1)
    assert parse_rate("0/0") is None and parse_rate("N/A") is None and parse_rate(None) is None
    assert parse_rate("0:1") is None


def test_last_meaningful_line_skips_generic_summaries():
    stderr = (b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c1a2b3c0] moov atom not found\n"
              b"/data/x.mp4: Invalid data found when processing input\n")
    assert last_meaningful_line(stderr, "/data/x.mp4") == "[mov,mp4,m4a,3gp,3g2,mj2] moov atom not found"
    assert last_meaningful_line(b"Error opening output\nConversion failed!\n") == "Error opening output"
    assert last_meaningful_line(b"") == "no error message"
