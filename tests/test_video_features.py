"""2D video features: the 1 fps decode and frame size, preprocessing, weights, batching across videos,
and the documented reading code of the shard file. (The media stage that runs them on a shard is
tested in test_media.py.)

ResNet-152 runs at roughly 0.4-1 s per 397x224 frame on the 2-core test machine, so the model sees
at most a handful of frames per test; most model checks use small frames.
"""

from __future__ import annotations

import copy
import subprocess
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mcnflow.features import frames as frames_module
from mcnflow.features.frames import decode_frames, expected_frames, output_size
from mcnflow.features.resnet import FrameEncoder, ResNet152Weights, WeightsError, random_resnet152
from mcnflow.features.video import BatchPipeline, check_settings

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


def uniform(rgb, height=64, width=112) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).expand(height, width, 3)


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def torchvision_features(resnet: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """The reference features, written out without the code under test: the recipe's normalization
    (x / 255, ImageNet mean and std) and torchvision's own forward pass up to its average pool."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    trunk = copy.deepcopy(resnet).eval()
    trunk.fc = nn.Identity()  # torchvision's avgpool is the mean over H and W, then flatten
    with torch.inference_mode():
        return trunk(x)


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
    assert torch.allclose(loaded(frame), torchvision_features(resnet, frame), atol=1e-4)
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
    assert torch.allclose(FrameEncoder(weights, CPU, l2_normalize=False)(frame), torchvision_features(resnet, frame),
                          atol=1e-4)


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


# --- settings ----------------------------------------------------------------------------------

def test_settings_must_be_complete_and_known():
    assert check_settings(settings()) == settings()
    with pytest.raises(Exception, match="missing key.*compression"):
        check_settings({k: v for k, v in settings().items() if k != "compression"})
    with pytest.raises(Exception, match="unknown key.*colour"):
        check_settings(settings(colour="red"))


# --- batching across videos ---------------------------------------------------------------------

def test_batches_cross_videos_and_every_video_gets_its_own_rows_back(random_encoder, one_torch_thread):
    """Batches of 2 frames over videos of 3, 1 and 2 frames (and one of another frame size, which
    cannot share a batch): each video's rows are the encoder's rows for its own frames alone."""
    generator = torch.Generator().manual_seed(0)
    sizes = {"a": (3, 48, 80), "b": (1, 48, 80), "other": (2, 64, 64), "c": (2, 48, 80)}
    videos = {vid: torch.randint(0, 256, (*shape, 3), dtype=torch.uint8, generator=generator)
              for vid, shape in sizes.items()}
    done, calls = [], []

    class Counting:
        def __init__(self, encoder):
            self.encoder = encoder

        def __getattr__(self, name):
            return getattr(self.encoder, name)

        def __call__(self, frames):
            calls.append(int(frames.shape[0]))
            return self.encoder(frames)

    pipeline = BatchPipeline(Counting(random_encoder), 2, lambda vid, rows, attrs: done.append((vid, rows, attrs)))
    for vid, frames in videos.items():
        pipeline.add(vid, frames, {"name": vid})
    pipeline.flush()
    # a's third frame shares a batch with b; c's two frames are a batch of their own
    assert calls == [2, 2, 2, 2] and [vid for vid, _, _ in done] == ["a", "b", "other", "c"]
    for vid, rows, attrs in done:
        assert attrs == {"name": vid} and rows.shape == (len(videos[vid]), 2048) and rows.dtype == np.float32
        assert np.allclose(rows, random_encoder(videos[vid]).numpy(), atol=1e-4), vid
    with pytest.raises(ValueError, match="no frames"):
        pipeline.add("empty", videos["a"][:0], {})


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
