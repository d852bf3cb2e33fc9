"""`mcnflow extract video`: decoding, preprocessing, weights, the shard file and its atomicity.

ResNet-152 runs at roughly 0.4-1 s per 397x224 frame on the 2-core test machine, so the model sees
at most a handful of frames per test; most model checks use small frames.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from mcnflow import cli
from mcnflow.features import frames as frames_module
from mcnflow.features.frames import decode_frames, expected_frames, output_size
from mcnflow.features.resnet import (FrameEncoder, ResNet152Features, ResNet152Weights, WeightsError,
                                     random_resnet152)
from mcnflow.features.store import ShardReader, is_complete
from mcnflow.features.video import check_settings, plan_shard
from mcnflow.core.ledger import FEATURE_COLUMNS, NORMALIZE_COLUMNS, Journal, journal_path, read_ledger
from shard_utils import h5_contents, leftovers

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def settings(**overrides) -> dict:
    base = {"fps": 1, "short_side": 224, "weights": "none", "l2_normalize": True, "batch_size": 3,
            "device": "cpu", "decode_workers": 2, "seed": 0, "compression": None}
    return {**base, **overrides}


def make_video(path: Path, colour: str, seconds: float, size: str = "454x256") -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"color=c={colour}:s={size}:d={seconds}:r=30",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def normalize_row(video_id: str, path: Path | None, status: str = "ok", message: str = "",
                  duration: float | None = None) -> dict:
    row = dict.fromkeys(NORMALIZE_COLUMNS, "")
    row.update(video_id=video_id, status=status, message=message,
               path=str(path) if path else "", duration="" if duration is None else str(duration))
    return row


def write_normalize_ledger(path: Path, rows: list[dict]) -> Path:
    lines = ["\t".join(NORMALIZE_COLUMNS)] + ["\t".join(r[c] for c in NORMALIZE_COLUMNS) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def uniform(rgb, height=64, width=112) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).expand(height, width, 3)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def random_encoder() -> FrameEncoder:
    return FrameEncoder(ResNet152Weights.random(0), CPU, l2_normalize=True)


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory):
    """A zero-init-residual resnet152 (seed 1) kept in memory and saved as a state dict."""
    resnet = random_resnet152(seed=1).eval()
    path = tmp_path_factory.mktemp("weights") / "resnet152-seed1.pth"
    torch.save(resnet.state_dict(), path)
    return resnet, path


# --- decoding ----------------------------------------------------------------------------------

def test_output_size_follows_the_recipe():
    assert output_size(454, 256, 224) == (397, 224)   # int(454 * 224 / 256) = int(397.25)
    assert output_size(256, 454, 224) == (224, 397)   # portrait: the width is the short side
    assert output_size(640, 480, 224) == (298, 224)
    # rows of a constant-rate video of d seconds at fps: floor(d * fps + 0.5), at least 1
    assert [expected_frames(d, 1) for d in (0.3, 0.5, 1.4, 1.5, 2.0, 2.5, 2.9)] == [1, 1, 1, 2, 2, 3, 3]
    assert expected_frames(3.0, 2) == 6


def test_decode_frames_size_count_and_colour(tmp_path):
    for seconds in (0.3, 0.7, 1.5, 2.4):
        video = decode_frames(make_video(tmp_path / f"red{seconds}.mp4", "red", seconds), fps=1, short_side=224)
        assert video.frames.dtype == np.uint8
        assert video.frames.shape == (expected_frames(seconds, 1), 224, 397, 3), seconds
        assert (video.source_width, video.source_height) == (454, 256)
        assert video.duration == pytest.approx(seconds, abs=0.05)
        # pure red survives the yuv420 round trip within a few levels
        assert np.abs(video.frames.astype(int) - [255, 0, 0]).max() <= 3
    half = decode_frames(tmp_path / "red1.5.mp4", fps=2, short_side=112)
    assert half.frames.shape == (3, 112, 198, 3)


def test_decode_error_names_the_reason(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(frames_module.DecodeError, match="moov atom not found|Invalid data"):
        decode_frames(bad, 1, 224)
    with pytest.raises(frames_module.DecodeError, match="no such file"):
        decode_frames(tmp_path / "missing.mp4", 1, 224)


# --- preprocessing and weights ------------------------------------------------------------------

def test_preprocessing_is_pinned():
    preprocess = ResNet152Weights.random(0).preprocess
    x = preprocess(torch.stack([uniform((255, 0, 0)), uniform((0, 255, 0))]))
    assert x.shape == (2, 3, 64, 112) and x.dtype == torch.float32
    red = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    green = [(0 - 0.485) / 0.229, (1 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    for channel in range(3):
        assert torch.allclose(x[0, channel], torch.tensor(red[channel]), atol=1e-5)
        assert torch.allclose(x[1, channel], torch.tensor(green[channel]), atol=1e-5)
    # every weights choice carries the recipe's normalization (imagenet's comes from torchvision)
    assert ResNet152Weights.imagenet().preprocess == preprocess
    with pytest.raises(ValueError, match="uint8"):
        preprocess(torch.zeros(1, 64, 64, 3))


def test_random_weights_separate_colours(random_encoder):
    frames = torch.stack([uniform((255, 0, 0)), uniform((255, 0, 0)), uniform((0, 0, 255))])
    features = random_encoder(frames).numpy()
    assert features.shape == (3, 2048)
    assert np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)   # l2_normalize
    assert cosine(features[0], features[1]) > 0.9999
    assert cosine(features[0], features[2]) < 0.99
    assert "NOT pretrained" in random_encoder.weights.description and "seed 0" in random_encoder.weights.description
    # seeded: the same seed builds the same model
    again = FrameEncoder(ResNet152Weights.random(0), CPU, l2_normalize=True)
    assert torch.equal(again(frames[2:]), random_encoder(frames[2:]))


def test_weights_from_a_state_dict_file(saved_state):
    resnet, path = saved_state
    frame = uniform((30, 160, 90))[None]
    loaded = FrameEncoder(ResNet152Weights.resolve(str(path), seed=0), CPU, l2_normalize=False)
    with torch.inference_mode():
        reference = ResNet152Features(resnet).eval()(loaded.weights.preprocess(frame))
    assert torch.allclose(loaded(frame), reference, atol=1e-5)
    assert str(path.resolve()) in loaded.weights.description and loaded.weights.pretrained


def test_imagenet_weights_come_from_the_torch_hub_cache(saved_state, tmp_path, monkeypatch):
    """The real 'imagenet' code path, fed from the cache so no network is needed."""
    resnet, path = saved_state
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet152-394f9c45.pth").symlink_to(path)
    weights = ResNet152Weights.resolve("imagenet", seed=0)
    assert "IMAGENET1K_V1" in weights.description
    frame = uniform((200, 40, 10))[None]
    with torch.inference_mode():
        reference = ResNet152Features(resnet).eval()(weights.preprocess(frame))
    assert torch.allclose(FrameEncoder(weights, CPU, l2_normalize=False)(frame), reference, atol=1e-5)


def test_imagenet_weights_offline_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as error:
        ResNet152Weights.resolve("imagenet", seed=0).build()
    message = str(error.value)
    assert "imagenet" in message and str(tmp_path / "hub" / "checkpoints" / "resnet152-394f9c45.pth") in message
    assert "path" in message


def test_bad_weights_paths_give_errors_naming_the_path(tmp_path):
    with pytest.raises(WeightsError, match="nowhere.pth.*no such file"):
        ResNet152Weights.resolve(str(tmp_path / "nowhere.pth"), seed=0)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a pickle")
    with pytest.raises(WeightsError, match="garbage.pth"):
        ResNet152Weights.resolve(str(garbage), seed=0).build()
    other = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(10)}, other)
    with pytest.raises(WeightsError, match="other.pth.*not a torchvision resnet152 state dict"):
        ResNet152Weights.resolve(str(other), seed=0).build()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_cuda_without_a_gpu_is_a_config_error():
    from mcnflow.core.config import ConfigError
    from mcnflow.core.device import resolve_device

    assert resolve_device("auto", "features.video.device") == CPU
    with pytest.raises(ConfigError, match="features.video.device.*no CUDA device"):
        resolve_device("cuda", "features.video.device")


# --- settings and plan -------------------------------------------------------------------------

def test_settings_must_be_complete_and_known():
    assert check_settings(settings()) == settings()
    with pytest.raises(Exception, match="missing key.*compression"):
        check_settings({k: v for k, v in settings().items() if k != "compression"})
    with pytest.raises(Exception, match="unknown key.*colour"):
        check_settings(settings(colour="red"))


def test_plan_turns_failed_normalizations_into_no_media(tmp_path):
    plan = plan_shard([normalize_row("a", tmp_path / "a.mp4", duration=2.0),
                       normalize_row("b", None, status="corrupt", message="moov atom not found"),
                       normalize_row("c", None, status="ok")])
    assert [j.video_id for j in plan.jobs] == ["a"] and plan.jobs[0].duration == 2.0
    assert plan.skipped == [("b", "no_media", "normalize status corrupt: moov atom not found"),
                            ("c", "no_media", "normalize status ok but the ledger gives no path")]
    with pytest.raises(ValueError, match="twice"):
        plan_shard([normalize_row("a", tmp_path / "a.mp4")] * 2)


# --- the shard, end to end -----------------------------------------------------------------------

@pytest.mark.slow
def test_extract_video_shard(tmp_path):
    red = make_video(tmp_path / "red.mp4", "red", 2.0)        # 2 rows
    blue = make_video(tmp_path / "blue.mp4", "blue", 1.2)     # 1 row
    short = make_video(tmp_path / "short.mp4", "red", 0.3)    # shorter than half a second: still 1 row
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    ledger_in = write_normalize_ledger(tmp_path / "normalize.tsv", [
        normalize_row("red", red, duration=2.0), normalize_row("gone", None, "corrupt", "moov atom not found"),
        normalize_row("blue", blue, duration=1.2), normalize_row("broken", broken, duration=1.0),
        normalize_row("short", short, duration=0.3)])
    out, ledger = tmp_path / "video" / "shard-00003.h5", tmp_path / "video" / "shard-00003.tsv"
    # batch_size 3: the first batch holds red's 2 rows and blue's 1, so rows are split back across videos
    code = cli.main(["extract", "video", "--normalize-ledger", str(ledger_in), "--corpus", "demo", "--shard", "00003",
                     "--output", str(out), "--ledger", str(ledger), "--quiet", "--settings", json.dumps(settings())])
    assert code == 0

    rows = read_ledger(ledger)
    assert [(r["video_id"], r["status"], r["length"]) for r in rows] == [
        ("red", "ok", "2"), ("gone", "no_media", "0"), ("blue", "ok", "1"), ("broken", "error", "0"),
        ("short", "ok", "1")]
    assert "moov atom not found" in rows[1]["message"] and "broken.mp4" in rows[3]["message"]

    assert is_complete(out)
    reader = ShardReader(out)
    attrs = reader.attrs
    assert attrs["modality"] == "video" and attrs["corpus"] == "demo" and attrs["shard"] == 3
    assert "NOT pretrained" in attrs["weights"] and attrs["weights_setting"] == "none"
    assert attrs["fps"] == 1 and attrs["short_side"] == 224 and attrs["compression"] == "null"
    assert json.loads(attrs["settings"]) == {**settings(), "compile": False}  # the schema fills compile in
    assert {r["video_id"]: (r["status"], r["length"]) for r in reader.index()} == {
        "red": ("ok", 2), "gone": ("no_media", 0), "blue": ("ok", 1), "broken": ("error", 0), "short": ("ok", 1)}
    features = {v: reader.read(v) for v in ("red", "blue", "short")}
    assert features["red"].shape == (2, 2048) and features["red"].dtype == np.float16
    assert features["short"].shape == (1, 2048)
    assert np.allclose(np.linalg.norm(features["red"].astype(np.float32), axis=1), 1, atol=2e-3)
    assert cosine(features["red"][0], features["red"][1]) > 0.999
    assert cosine(features["red"][0], features["short"][0]) > 0.999
    assert cosine(features["red"][1], features["blue"][0]) < 0.99
    video_attrs = reader.video_attrs("red")
    assert video_attrs["duration"] == pytest.approx(2.0, abs=0.05) and video_attrs["n_frames"] == 2
    assert video_attrs["source_checksum"] == hashlib.sha256(red.read_bytes()).hexdigest()
    assert video_attrs["source"] == "red.mp4"
    assert (video_attrs["frame_width"], video_attrs["frame_height"]) == (397, 224)
    assert "broken" not in reader and "gone" not in reader
    reader.close()


def video_argv(ledger_in: Path, out_dir: Path, shard: str = "00000") -> list[str]:
    return ["extract", "video", "--normalize-ledger", str(ledger_in), "--corpus", "demo", "--shard", shard,
            "--output", str(out_dir / f"shard-{shard}.h5"), "--ledger", str(out_dir / f"shard-{shard}.tsv"),
            "--quiet", "--settings", json.dumps(settings(short_side=64, batch_size=1, decode_workers=1))]


def journal_rows(ledger: Path) -> dict:
    return Journal(journal_path(ledger), FEATURE_COLUMNS).read()


@pytest.mark.slow
def test_killed_extraction_resumes_from_the_videos_it_finished(tmp_path, caplog):
    videos = [make_video(tmp_path / f"v{i}.mp4", colour, 1.0, "128x72")
              for i, colour in enumerate(("red", "green", "blue"))]
    ledger_in = write_normalize_ledger(tmp_path / "normalize.tsv", [
        normalize_row("gone", None, "corrupt", "moov atom not found"),
        *(normalize_row(f"v{i}", p, duration=1.0) for i, p in enumerate(videos))])
    out_dir = tmp_path / "video"
    out, ledger, parts = out_dir / "shard-00000.h5", out_dir / "shard-00000.tsv", out_dir / "shard-00000.tsv.parts"
    argv = video_argv(ledger_in, out_dir)
    # its own session, so the kill takes the decoding worker with it, as a scheduler's kill of the job would
    process = subprocess.Popen([sys.executable, "-m", "mcnflow", *argv], cwd=tmp_path, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not any(row["status"] == "ok" for row in journal_rows(ledger).values()):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no video was finished"
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    finished = [vid for vid, row in journal_rows(ledger).items() if row["status"] == "ok"]
    assert finished[0] == "v0" and len(finished) < 3, "the job finished before it could be killed"
    assert not out.exists() and not ledger.exists()
    assert sorted(p.name for p in parts.iterdir() if p.suffix == ".npz") == [f"{vid}.npz" for vid in finished]

    neighbour = out_dir / ".tmp-shard-00001.h5.n31ghb0r"  # shard 00001's job writes beside this one
    neighbour.write_bytes(b"shard 00001")
    caplog.set_level(logging.INFO, logger="mcnflow")
    assert cli.main(argv) == 0

    # the rerun kept the finished videos' parts (and the no_media row) and computed only the others' rows
    messages = [r.getMessage() for r in caplog.records]
    assert f"demo/00000: {3 - len(finished)} video(s) to extract, {len(finished) + 1} outcome(s) kept " \
           "from an earlier run" in messages
    assert any(m.startswith(f"demo/00000: 3 of 4 videos ok; computed {3 - len(finished)} rows of "
                            f"{3 - len(finished)} video(s)") for m in messages), messages
    assert neighbour.read_bytes() == b"shard 00001"
    neighbour.unlink()
    assert leftovers(out_dir) == [] and sorted(p.name for p in out_dir.iterdir()) == [out.name, ledger.name]

    # the same file an uninterrupted run writes
    fresh = tmp_path / "fresh"
    assert cli.main(video_argv(ledger_in, fresh)) == 0
    assert h5_contents(out) == h5_contents(fresh / out.name)
    assert read_ledger(ledger) == read_ledger(fresh / ledger.name)
    assert [r["status"] for r in read_ledger(ledger)] == ["no_media", "ok", "ok", "ok"]


def documented_reading_code() -> dict:
    doc = (REPO / "docs" / "hdf5_layout.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/hdf5_layout.md", "exec"), namespace)
    return namespace


def test_the_documented_h5py_reading_code_reads_a_video_shard(tmp_path):
    """docs/hdf5_layout.md's read_shard and clip, on a video file written by store.py."""
    from mcnflow.features.store import ShardWriter

    namespace = documented_reading_code()
    video = tmp_path / "video.h5"
    rows = np.arange(4 * 2048, dtype=np.float16).reshape(4, 2048) % 7
    with ShardWriter(video, "video", "demo", 0, {"fps": 1}) as writer:
        writer.add("abc", rows, {"duration": 4.0})
        writer.mark("gone", "no_media")
    features, attrs = namespace["read_shard"](video)
    assert list(features) == ["abc"] and np.array_equal(features["abc"], rows) and attrs["fps"] == 1
    assert np.array_equal(namespace["clip"](features["abc"], 1.2, 2.7), rows[1:3].astype(np.float32).max(0))


def test_the_documented_h5py_reading_code_reads_captions(tmp_path):
    """docs/hdf5_layout.md's read_captions, on a text shard written by store.py."""
    from mcnflow.features.store import ShardWriter

    namespace = documented_reading_code()
    text = tmp_path / "text.h5"
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    with ShardWriter(text, "text", "demo", 0) as writer:
        writer.add_word_table(["cut", "the", "onion", "slowly"], vectors)
        writer.add("abc", {"token_ids": np.array([2, 0, 0, 3], np.int32), "offsets": np.array([0, 3, 3, 4]),
                           "start": np.array([0.5, 2.0, 3.0], np.float32), "end": np.array([2.0, 3.0, 4.5], np.float32)})
    captions = namespace["read_captions"](text, "abc")
    assert [(c[0], c[1], c[2]) for c in captions] == [(0.5, 2.0, ["onion", "cut", "cut"]), (2.0, 3.0, []),
                                                      (3.0, 4.5, ["slowly"])]
    assert np.array_equal(captions[0][3], vectors[[2, 0, 0]]) and captions[1][3].shape == (0, 3)


def test_keyframes_only_decode_of_an_aligned_file_gives_the_same_frames(tmp_path):
    from mcnflow.normalize import NormalizeSettings, normalize_video

    source = tmp_path / "moving.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=s=640x360:r=30:d=3", "-c:v", "libx264", "-preset", "ultrafast", str(source)], check=True)
    base = dict(width=454, height=256, fps=30, audio_rate=16000, resize_mode="pad", video_codec="libx264",
                preset="ultrafast", crf=23, audio_bitrate="48k", threads=1, duration_tolerance=0.5)
    aligned = normalize_video(source, tmp_path / "aligned.mp4", NormalizeSettings.from_mapping(base)).path
    full = decode_frames(aligned, fps=1, short_side=112)
    keys = decode_frames(aligned, fps=1, short_side=112, keyframes_only=True)
    assert full.n_frames == 3 and np.array_equal(full.frames, keys.frames)
    plain = normalize_video(source, tmp_path / "plain.mp4",
                            NormalizeSettings.from_mapping({**base, "align_keyframes": False})).path
    with pytest.raises(frames_module.DecodeError, match="not aligned"):
        decode_frames(plain, fps=1, short_side=112, keyframes_only=True)
