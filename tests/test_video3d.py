"""3D ResNeXt-101 features (mcnflow.features.resnext3d, ``mcnflow media`` with 3D video): the recipe,
the checkpoint, random init, and the shard file.

ResNeXt-101 3D costs about 1.5-2.5 s per 16 x 112 x 112 clip on the 2-core test machine, so the shard
tests run it on 32 x 32 crops (the same network: global pooling makes it size-agnostic) and the
checkpoint-variant tests use the same architecture with one block per stage.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from mcnflow import cli
from mcnflow.core.config import ConfigError, load_config
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, read_ledger, write_ledger
from mcnflow.core.plan import Plan
from mcnflow.features.frames import decode_frames, expected_frames
from mcnflow.features.resnet import WeightsError
from mcnflow.features.resnext3d import (KINETICS_MEAN, ClipEncoder, ClipPreprocess, Recipe3D, ResNeXt3DWeights,
                                        clip_batches, crop_box, n_clips, resize_and_crop)
from mcnflow.features.store import ShardReader, is_complete
from mcnflow.features.video3d import check_settings
from mcnflow.media.stage import Outputs, media_shard
from shard_utils import h5_contents, leftovers

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
SHALLOW = (1, 1, 1, 1)


def settings(**overrides) -> dict:
    base = {"weights": "none", "blocks": [3, 4, 23, 3], "fps": 24, "short_side": 32, "crop": 32, "clip_frames": 16, "batch_size": 4,
            "device": "cpu", "decode_workers": 0, "seed": 0, "l2_normalize": True, "compression": None}
    return {**base, **overrides}


def make_video(path: Path, seconds: float, source: str = "testsrc2", size: str = "128x72") -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", f"{source}{':' if '=' in source else '='}s={size}:r=30", "-t", str(seconds),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(path)], check=True)
    return path


def download_ledger(path: Path, rows: list[tuple[str, Path | None]]) -> Path:
    """A download ledger: ``None`` for a video that was not downloaded."""
    write_ledger(path, [dict(video_id=vid, status="ok" if video else "unavailable", path=str(video or ""),
                             message="", attempts=1) for vid, video in rows], DOWNLOAD_COLUMNS)
    return path


def media_stage_settings(**video3d) -> dict:
    """config.yaml's media stage (2D + 3D video), scaled down: no kept videos, small 2D frames, the 3D
    settings of :func:`settings` (32 x 32 crops)."""
    config = load_config([REPO / "config.yaml"], {
        "normalize": {"keep": False},
        "training": {"video_features": ["2d", "3d"], "video_dim": 4096},
        "features": {"video": {"weights": "none", "short_side": 64, "batch_size": 1, "decode_workers": 0,
                               "device": "cpu"},
                     "video3d": {k: v for k, v in settings(**video3d).items() if k != "compression"}}})
    return json.loads(json.dumps(Plan(config).settings("media")))


def media_outputs(root: Path) -> Outputs:
    return Outputs(root / "normalize.tsv", None, {name: (root / f"{name}.h5", root / f"{name}.tsv")
                                                  for name in ("video", "audio", "video3d")})


def cosines(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, np.float64)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    return f @ f.T


# --- the recipe ------------------------------------------------------------------------------------

def test_rows_per_second_and_the_rounding_of_partial_clips():
    assert Recipe3D().rows_per_second == 1.5
    # a partial last clip counts: rows = ceil(frames / 16)
    assert [n_clips(t) for t in (0, 1, 15, 16, 17, 32, 33, 96, 103)] == [0, 1, 1, 1, 2, 2, 3, 6, 7]
    # frames = floor(24 d + 0.5) (ffmpeg's fps filter, at least 1), rows = ceil(frames / 16)
    rows = [n_clips(expected_frames(d, 24)) for d in (4.0, 4.3, 10.0, 0.5, 0.02, 2 / 3, 0.7)]
    assert rows == [6, 7, 15, 1, 1, 1, 2]


def test_clip_batches_pad_the_last_clip_with_zero_frames():
    frames = torch.arange(1, 41, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 2, 3, 3)  # frame i holds i + 1
    batches = list(clip_batches(frames, clip_frames=16, batch_size=2))
    assert [(first, tuple(b.shape)) for first, b in batches] == [(0, (2, 16, 2, 3, 3)), (2, (1, 16, 2, 3, 3))]
    clips = torch.cat([b for _, b in batches])
    assert clips[:, :, 0, 0, 0].flatten()[:40].tolist() == list(range(1, 41))  # order kept
    assert clips[2, 8:].eq(0).all() and clips[2, :8].ne(0).all()                 # 8 zero frames at the end
    assert list(clip_batches(frames[:0])) == []


def test_preprocessing_crops_the_centre_and_subtracts_the_kinetics_mean():
    # landscape, short side already 112 (as ffmpeg's scale gives it): column c holds the value c
    columns = torch.arange(198, dtype=torch.uint8).view(1, 1, 198, 1).expand(2, 112, 198, 3)
    x = ClipPreprocess()(columns)
    assert x.shape == (2, 3, 112, 112) and x.dtype == torch.float32
    assert crop_box(198, 112, 112) == (43, 0)  # int((198 - 112) / 2)
    for channel, mean in enumerate((110.6, 103.2, 96.3)):
        expected = torch.arange(43, 155, dtype=torch.float32) - mean
        assert torch.allclose(x[1, channel], expected.expand(112, 112), atol=1e-4)
    # portrait: the crop is vertical, rows int((150 - 112) / 2) = 19 .. 130
    rows = torch.arange(150, dtype=torch.uint8).view(1, 150, 1, 1).expand(1, 150, 112, 3)
    assert torch.equal(resize_and_crop(rows)[0, :, 0, 0], torch.arange(19, 131, dtype=torch.uint8))
    # a frame of another size is scaled to short side 112 first (int(396 * 112 / 224) = 198), then cropped
    grey = torch.full((1, 224, 396, 3), 200, dtype=torch.uint8)
    assert torch.equal(resize_and_crop(grey), torch.full((1, 112, 112, 3), 200, dtype=torch.uint8))
    assert torch.allclose(ClipPreprocess()(grey)[0, :, 5, 7], torch.tensor([200.0]) - torch.tensor(KINETICS_MEAN))
    with pytest.raises(ValueError, match="uint8"):
        ClipPreprocess()(torch.zeros(1, 112, 112, 3))


# --- the checkpoint ----------------------------------------------------------------------------------

def published_shapes(layers=(3, 4, 23, 3)) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of Hara et al.'s resnext-101 (videocnn/models/resnext.py: cardinality
    32, shortcut B, expansion 2, widths 128/256/512/1024, conv1 7x7x7 with 64 channels, fc to 400),
    written out from the reference, without the module under test."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name, n):
        shapes.update({f"{name}.weight": (n,), f"{name}.bias": (n,), f"{name}.running_mean": (n,),
                       f"{name}.running_var": (n,)})

    shapes["conv1.weight"] = (64, 3, 7, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((128, 256, 512, 1024), layers), start=1):
        mid = 32 * (planes // 32)
        for block in range(blocks):
            prefix = f"layer{stage}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (mid, inplanes, 1, 1, 1)
            bn(f"{prefix}.bn1", mid)
            shapes[f"{prefix}.conv2.weight"] = (mid, mid // 32, 3, 3, 3)
            bn(f"{prefix}.bn2", mid)
            shapes[f"{prefix}.conv3.weight"] = (planes * 2, mid, 1, 1, 1)
            bn(f"{prefix}.bn3", planes * 2)
            if block == 0:
                shapes[f"{prefix}.downsample.0.weight"] = (planes * 2, inplanes, 1, 1, 1)
                bn(f"{prefix}.downsample.1", planes * 2)
            inplanes = planes * 2
    shapes["fc.weight"], shapes["fc.bias"] = (400, 2048), (400,)
    return shapes


def published_state(layers=(3, 4, 23, 3), seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the published shapes, scaled so a forward pass stays finite."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in published_shapes(layers).items():
        if key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) == 5:
            fan_in = shape[1] * shape[2] * shape[3] * shape[4]
            state[key] = torch.randn(shape, generator=generator) * (1.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.1
    return state


def test_the_published_checkpoint_loads_by_its_key_names(tmp_path):
    state = published_state()
    assert len(state) == 5 + 33 * 15 + 4 * 5 + 2  # conv1 + bn1, 33 blocks of 3 convs + 3 BNs, 4 shortcuts, fc
    path = tmp_path / "resnext-101-kinetics.pth"
    # as Hara et al. saved it: DataParallel's "module." prefix, no num_batches_tracked (PyTorch 0.3)
    torch.save({"epoch": 200, "arch": "resnext-101", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    weights = ResNeXt3DWeights.resolve(str(path), seed=0)
    assert weights.pretrained and str(path.resolve()) in weights.description
    model = weights.build()
    loaded = model.state_dict()
    assert set(loaded) - {k for k in loaded if k.endswith("num_batches_tracked")} == set(state) - {"fc.weight", "fc.bias"}
    for key in ("conv1.weight", "layer3.22.conv2.weight", "layer4.0.downsample.1.running_var", "layer4.2.bn3.bias"):
        assert torch.equal(loaded[key], state[key]), key
    assert all(t.device.type == "cpu" for t in loaded.values())  # nothing left on the meta device


def test_a_plain_state_dict_loads_too(tmp_path):
    """The HowTo100M extractor's resnext101.pth is loaded with load_state_dict(torch.load(...)): a plain,
    unprefixed state dict."""
    state = published_state(SHALLOW)
    path = tmp_path / "resnext101.pth"
    torch.save(state, path)
    weights = ResNeXt3DWeights.resolve(str(path), seed=0, layers=SHALLOW)
    encoder = ClipEncoder(weights, CPU, batch_size=2, recipe=Recipe3D(short_side=32, crop=32))
    assert torch.equal(encoder.model.state_dict()["layer2.0.conv2.weight"], state["layer2.0.conv2.weight"])
    features = encoder.encode(torch.randint(0, 256, (20, 32, 32, 3), dtype=torch.uint8,
                                            generator=torch.Generator().manual_seed(1)))
    assert features.shape == (2, 2048) and features.dtype == np.float32 and np.isfinite(features).all()
    assert np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)


def test_wrong_checkpoints_fail_naming_the_file_and_the_key(tmp_path):
    missing = tmp_path / "models" / "resnext101.pth"
    with pytest.raises(WeightsError) as error:
        ResNeXt3DWeights.resolve(str(missing), seed=0)
    message = str(error.value)
    assert str(missing) in message and "no such file" in message and "Google Drive" in message
    assert "not downloaded automatically" in message and "none" in message

    def fails(state, expected: str, name: str = "bad.pth", **extra):
        path = tmp_path / name
        torch.save({"arch": "resnext-101", "state_dict": {f"module.{k}": v for k, v in state.items()}, **extra}, path)
        with pytest.raises(WeightsError, match=expected) as error:
            ResNeXt3DWeights.resolve(str(path), seed=0, layers=SHALLOW).build()
        assert str(path) in str(error.value)

    state = published_state(SHALLOW)
    # the 2020 rewrite of 3D-ResNets-PyTorch starts ResNeXt with 128 channels: another network
    fails({**state, "conv1.weight": torch.zeros(128, 3, 7, 7, 7)},
          r"first bad key 'conv1.weight' \(shape \(128, 3, 7, 7, 7\) instead of \(64, 3, 7, 7, 7\)\)")
    renamed = {("layer2.0.shortcut.0.weight" if k == "layer2.0.downsample.0.weight" else k): v for k, v in state.items()}
    fails(renamed, r"first bad key 'layer2.0.downsample.0.weight' \(missing\); 2 bad key\(s\)")
    fails(state, "arch 'resnet-101'", name="resnet.pth", arch="resnet-101")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a pickle")
    with pytest.raises(WeightsError, match="garbage.pth.*cannot be read"):
        ResNeXt3DWeights.resolve(str(garbage), seed=0).build()


# --- random init -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_random_init_features_are_not_collapsed(tmp_path):
    """Full depth, full size: features of different clips must differ (cosine < 0.99; with plain random
    init, without the zero-initialised last BN of each block, testsrc2 vs smptebars gives 0.992)."""
    clips = [resize_and_crop(torch.from_numpy(decode_frames(make_video(tmp_path / f"{source}.mp4", 0.7, source,
                                                                      "454x256"), 24, 112).frames))[:16].numpy()
             for source in ("testsrc2", "smptebars", "mandelbrot")]
    red = np.zeros((16, 112, 112, 3), np.uint8)
    red[..., 0] = 255
    encoder = ClipEncoder(ResNeXt3DWeights.random(0), CPU, batch_size=4)
    assert not encoder.weights.pretrained and "NOT pretrained" in encoder.weights.description
    features = encoder.encode(np.concatenate([*clips, red]))
    similarity = cosines(features)
    assert features.shape == (4, 2048)
    assert similarity[np.triu_indices(4, 1)].max() < 0.99, similarity


def test_random_init_is_seeded_and_batching_does_not_change_features():
    same = [ResNeXt3DWeights.random(3, SHALLOW).build().state_dict() for _ in range(2)]
    other = ResNeXt3DWeights.random(4, SHALLOW).build().state_dict()
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])
    assert not torch.equal(same[0]["layer1.0.conv2.weight"], other["layer1.0.conv2.weight"])
    assert not same[0]["layer1.0.bn3.weight"].any()  # the zero-initialised last BN of each block
    frames = torch.randint(0, 256, (40, 40, 56, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    encoder = ClipEncoder(ResNeXt3DWeights.random(3, SHALLOW), CPU, batch_size=1, recipe=Recipe3D(short_side=40, crop=32))
    one = encoder.encode(frames)
    encoder.batch_size = 3
    assert one.shape == (3, 2048) and np.allclose(one, encoder.encode(frames), atol=1e-5)


# --- settings -------------------------------------------------------------------------------------------

def test_settings_come_from_the_config_and_errors_name_the_key(repo_root):
    from mcnflow.core.config import load_config
    from mcnflow.core.plan import Plan, validate_stage_settings

    from mcnflow.core.frozen import thaw

    # the media stage carries the 3D settings when an experiment reads 3D features (config.yaml's do)
    real = Plan(load_config([repo_root / "config.yaml"])).settings("media")["video3d"]
    assert thaw(real) == settings(weights="data/models/resnext101.pth", short_side=112, crop=112, batch_size=64,
                                  device="auto", decode_workers=2)
    demo = Plan(load_config([repo_root / "config.yaml", repo_root / "demo" / "config.yaml"])).settings("media")["video3d"]
    assert demo["weights"] == "none"
    assert check_settings(settings()) == settings()
    with pytest.raises(ConfigError, match="features.video3d.crop.*larger than.*short_side"):
        check_settings(settings(crop=64))
    with pytest.raises(ConfigError, match=r"features.video3d.blocks': \[1, 1, 1, 1\] is not ResNeXt-101"):
        check_settings(settings(weights="some/checkpoint.pth", blocks=[1, 1, 1, 1]))
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        check_settings(settings(colour="red"))
    allowed = r"video3d.device': 'tpu' is not allowed; allowed values: 'auto', 'cpu', 'cuda'"
    media = thaw(Plan(load_config([repo_root / "config.yaml"])).settings("media"))
    media["video3d"]["device"] = "tpu"
    with pytest.raises(ConfigError, match=allowed):
        validate_stage_settings("media", media)


# --- the shard (mcnflow media) -------------------------------------------------------------------------

def shallow_encoder() -> ClipEncoder:
    return ClipEncoder(ResNeXt3DWeights.random(0, SHALLOW), CPU, batch_size=4, recipe=Recipe3D(short_side=32, crop=32))


@pytest.fixture(scope="module")
def encoder_2d():
    """The media job's 2D encoder, built once (a ResNet-152 random init takes seconds)."""
    from mcnflow.features.video import build_encoder

    return build_encoder(media_stage_settings()["video"])


@pytest.mark.slow
def test_the_media_shard_gives_1_5_3d_rows_per_second(tmp_path, encoder_2d):
    four = make_video(tmp_path / "four.mp4", 4.0)          # 96 frames at 24 fps -> 6 clips
    partial = make_video(tmp_path / "partial.mp4", 4.3)    # 103 frames -> 6 full clips + 1 padded = 7
    red = make_video(tmp_path / "red.mp4", 0.7, source="color=c=red")  # 17 frames -> 2 clips
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    downloads = download_ledger(tmp_path / "download.tsv", [
        ("four", four), ("gone", None), ("partial", partial), ("broken", broken), ("red", red)])
    settings_3d = media_stage_settings()
    media_shard(downloads, "demo", "00002", media_outputs(tmp_path / "out"), settings_3d, progress=False,
                encoders={"video": encoder_2d, "video3d": shallow_encoder()})
    rows = read_ledger(tmp_path / "out" / "video3d.tsv")
    assert [(r["video_id"], r["status"], r["length"]) for r in rows] == [
        ("four", "ok", "6"), ("gone", "no_media", "0"), ("partial", "ok", "7"), ("broken", "no_media", "0"),
        ("red", "ok", "2")]
    assert "normalize status corrupt" in rows[3]["message"]

    out = tmp_path / "out" / "video3d.h5"
    assert is_complete(out)
    reader = ShardReader(out)
    attrs = reader.attrs
    assert attrs["modality"] == "video" and attrs["features"] == "3d" and attrs["shard"] == 2
    assert attrs["rows_per_second"] == 1.5 and attrs["fps"] == 24 and attrs["clip_frames"] == 16
    assert attrs["pretrained"] == False and "NOT pretrained" in attrs["weights"]  # noqa: E712 (numpy bool)
    assert attrs["preprocess_mean"].tolist() == [110.6, 103.2, 96.3] and attrs["precision"] == "float32"
    assert attrs["weights_setting"] == "none" and attrs["feature_dim"] == 2048
    assert json.loads(attrs["settings"]) == settings_3d["video3d"]
    features = {v: reader.read(v) for v in ("four", "partial", "red")}
    assert {v: f.shape for v, f in features.items()} == {"four": (6, 2048), "partial": (7, 2048), "red": (2, 2048)}
    assert features["four"].dtype == np.float16
    for f in features.values():
        assert np.allclose(np.linalg.norm(f.astype(np.float32), axis=1), 1, atol=2e-3)
    # rows per second of video: 6 rows / 4 s
    assert len(features["four"]) / reader.video_attrs("four")["duration"] == pytest.approx(1.5)
    video_attrs = reader.video_attrs("partial")
    assert (video_attrs["n_frames"], video_attrs["n_clips"], video_attrs["padded_frames"]) == (103, 7, 9)
    assert (video_attrs["frame_width"], video_attrs["frame_height"]) == (32, 32)
    # the two clips of the red video: the second is 1 red frame and 15 black ones
    assert cosines(features["red"])[0, 1] < 0.99
    assert "broken" not in reader and "gone" not in reader
    reader.close()


@pytest.mark.slow
def test_media_cli_builds_the_full_resnext_101_from_the_settings(tmp_path):
    video = make_video(tmp_path / "v.mp4", 0.7)  # 17 frames: 2 clips
    downloads = download_ledger(tmp_path / "download.tsv", [("v", video)])
    settings_3d = media_stage_settings()
    settings_3d["video"]["decode_workers"] = 1
    out = tmp_path / "out"
    argv = ["media", "--download-ledger", str(downloads), "--corpus", "demo", "--shard", "00000",
            "--normalize-ledger", str(out / "normalize.tsv"), "--quiet", "--settings", json.dumps(settings_3d)]
    for name in ("video", "audio", "video3d"):
        argv += [f"--{name}-output", str(out / f"{name}.h5"), f"--{name}-ledger", str(out / f"{name}.tsv")]
    assert cli.main(argv) == 0
    reader = ShardReader(out / "video3d.h5")
    assert reader.read("v").shape == (2, 2048) and reader.attrs["rows_per_second"] == 1.5
    assert "blocks" not in reader.attrs["weights"]  # the full ResNeXt-101
    reader.close()


class KilledAfter:
    """The real encoder, but the job is killed (an exception) when encode call number ``calls + 1`` starts."""

    def __init__(self, encoder: ClipEncoder, calls: int):
        self.encoder, self.left, self.encoded = encoder, calls, 0

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode(self, frames):
        if self.left == 0:
            raise KeyboardInterrupt("killed")
        self.left -= 1
        self.encoded += 1
        return self.encoder.encode(frames)


def test_a_rerun_keeps_the_finished_3d_parts(tmp_path, caplog, encoder_2d):
    """Each 0.5 s video is one encode call (12 frames, fewer than a batch of clips). The 2D batch is
    one frame, so when v1's 3D encode is killed, v0 has every row (the 2D one lands as v1's batch runs)."""
    videos = [make_video(tmp_path / f"v{i}.mp4", 0.5, source=f"color=c={c}") for i, c in enumerate(("red", "blue"))]
    downloads = download_ledger(tmp_path / "download.tsv", [(f"v{i}", p) for i, p in enumerate(videos)])
    settings_3d = media_stage_settings()
    encoder = shallow_encoder()
    with pytest.raises(KeyboardInterrupt):
        media_shard(downloads, "demo", 0, media_outputs(tmp_path / "run"), settings_3d, progress=False,
                    encoders={"video": encoder_2d, "video3d": KilledAfter(encoder, 1)})
    assert not (tmp_path / "run" / "video3d.h5").exists()
    assert [p.name for p in (tmp_path / "run" / "video3d.tsv.parts").glob("*.npz")] == ["v0.npz"]

    caplog.set_level(logging.INFO, logger="mcnflow")
    rerun = KilledAfter(encoder, 2)
    media_shard(downloads, "demo", 0, media_outputs(tmp_path / "run"), settings_3d, progress=False,
                encoders={"video": encoder_2d, "video3d": rerun})
    assert rerun.encoded == 1  # only v1
    assert "demo/0: 1 video(s) to decode, 1 kept from an earlier run" in [r.getMessage() for r in caplog.records]
    assert leftovers(tmp_path / "run") == []
    media_shard(downloads, "demo", 0, media_outputs(tmp_path / "fresh"), settings_3d, progress=False,
                encoders={"video": encoder_2d, "video3d": encoder})
    assert h5_contents(tmp_path / "run" / "video3d.h5") == h5_contents(tmp_path / "fresh" / "video3d.h5")
