"""3D ResNeXt-101 clip features as in the HowTo100M 3D recipe, and the preprocessing that goes with them.

Model: the ResNeXt-101 of Hara et al. (``kenshohara/3D-ResNets-PyTorch:models/resnext.py``; the CVPR 2018
version that the Kinetics checkpoint ``resnext-101-kinetics.pth`` was trained with, as copied into
``antoine77340/video_feature_extractor:videocnn/models/resnext.py``): cardinality 32, shortcut type B
(1x1x1 convolution + BN on every block that changes width or stride), bottleneck expansion 2, stage
widths 128/256/512/1024 (2048 channels out), conv1 7x7x7 with stride (1, 2, 2), max pool 3x3x3 stride 2.
The classifier is not built: a feature is the mean of the layer4 output over time, height and width,
2048-d. For the recipe's 16 x 112 x 112 clips layer4 is 1 x 4 x 4, exactly what the reference's
``AvgPool3d((1, 4, 4))`` averages (``last_fc=False``).

Recipe (``video_feature_extractor:extract.py, video_loader.py, preprocessing.py`` with ``--type 3d``):
frames at 24 fps, short side scaled to 112 (long side ``int(long * 112 / short)``), centre crop 112x112
at ``(int((w - 112) / 2), int((h - 112) / 2))``, zero frames appended to complete the last 16-frame clip
(zeros on the 0-255 scale, before normalisation: black frames), ``x - [110.6, 103.2, 96.3]`` per RGB
channel (std 1) on 0-255 values, non-overlapping 16-frame clips: 24 / 16 = 1.5 features per second,
each L2-normalised.

These functions do not decode: they take uint8 RGB frames ``(T, H, W, 3)`` sampled at ``fps`` however
they were decoded (``mcnflow media`` decodes with ffmpeg, which also scales them to short side 112:
:class:`mcnflow.media.consumers.Clips3D`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mcnflow.features.frames import output_size
from mcnflow.features.resnet import CUDA_AUTOCAST_DTYPE, WeightsError, read_weights_file

FEATURE_DIM = 2048
CARDINALITY = 32
EXPANSION = 2
STAGE_PLANES = (128, 256, 512, 1024)
LAYERS_101 = (3, 4, 23, 3)
ARCH = "resnext-101"  # the ``arch`` entry of Hara et al.'s checkpoints
MODEL_NAME = ("3D ResNeXt-101 (Hara et al. CVPR 2018; cardinality 32, shortcut B), layer4 mean over "
              "T,H,W (fc removed), 2048-d")
# video_feature_extractor:preprocessing.py (3d): the Kinetics mean on 0-255 values, std 1
KINETICS_MEAN = (110.6, 103.2, 96.3)
KINETICS_STD = (1.0, 1.0, 1.0)
CHECKPOINT_SOURCES = (
    "Hara et al.'s resnext-101-kinetics.pth from the Google Drive folder linked in "
    "kenshohara/3D-ResNets-PyTorch's README (https://drive.google.com/drive/folders/"
    "1zvl89AgFAApbH0At-gMuZSeQB_LpNP-M), or the HowTo100M extractor's copy resnext101.pth "
    "(https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/models/resnext101.pth)")
# Checkpoint entries the feature model does not use: the 400-way Kinetics classifier.
CLASSIFIER_KEYS = ("fc.weight", "fc.bias")


# --- the recipe --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe3D:
    """The sampling, resize, crop, clip length and normalisation of the 3D features."""

    fps: float = 24.0
    short_side: int = 112
    crop: int = 112
    clip_frames: int = 16
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD

    def __post_init__(self):
        if not self.fps > 0 or self.clip_frames < 1 or self.crop < 1:
            raise ValueError(f"bad 3D recipe {self}")
        if self.crop > self.short_side:
            raise ValueError(f"crop {self.crop} is larger than short_side {self.short_side}")

    @property
    def rows_per_second(self) -> float:
        """Features per second of video: 24 fps / 16 frames = 1.5."""
        return self.fps / self.clip_frames


def n_clips(n_frames: int, clip_frames: int = 16) -> int:
    """Clips (feature rows) of ``n_frames`` frames: ``ceil(n_frames / clip_frames)``; a partial last
    clip counts (it is completed with zero frames)."""
    return -(-int(n_frames) // int(clip_frames))


def crop_box(width: int, height: int, crop: int) -> tuple[int, int]:
    """(x, y) of the centre crop: ``int((w - crop) / 2)``, ``int((h - crop) / 2)`` (the recipe's rule)."""
    if crop > min(width, height):
        raise ValueError(f"cannot crop {crop}x{crop} from a {width}x{height} frame")
    return int((width - crop) / 2), int((height - crop) / 2)


def resize_and_crop(frames: torch.Tensor, short_side: int = 112, crop: int = 112) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> uint8 ``(T, crop, crop, 3)``: short side to ``short_side`` (unless it is
    already), then the centre crop.

    When a resize is needed it is bicubic with antialiasing (close to, not bit-equal with, ffmpeg's
    default bicubic ``scale``); frames that arrive with the short side already at ``short_side``, as
    ffmpeg's ``scale`` gives them, are only cropped.
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    height, width = int(frames.shape[1]), int(frames.shape[2])
    if min(height, width) != short_side:
        new_width, new_height = output_size(width, height, short_side)
        if frames.shape[0]:
            x = frames.permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=(new_height, new_width), mode="bicubic", align_corners=False, antialias=True)
            frames = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        else:
            frames = frames.new_zeros((0, new_height, new_width, 3))
        height, width = new_height, new_width
    x0, y0 = crop_box(width, height, crop)
    return frames[:, y0:y0 + crop, x0:x0 + crop, :]


@dataclass(frozen=True)
class ClipPreprocess:
    """uint8 frames ``(T, H, W, 3)`` -> float32 ``(T, 3, crop, crop)``: resize/crop, then ``(x - mean) / std``
    on 0-255 values."""

    recipe: Recipe3D = Recipe3D()
    _constants: dict = field(default_factory=dict, repr=False, compare=False)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            self._constants[device] = tuple(torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1).to(device)
                                            for v in (self.recipe.mean, self.recipe.std))
        return self._constants[device]

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """Already resized and cropped uint8 frames ``(T, c, c, 3)`` -> float32 ``(T, 3, c, c)``."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        mean, std = self._on(frames.device)
        return frames.permute(0, 3, 1, 2).float().sub_(mean).div_(std)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.normalize(resize_and_crop(frames, self.recipe.short_side, self.recipe.crop))


def clip_batches(frames: torch.Tensor | np.ndarray, clip_frames: int = 16,
                 batch_size: int = 64) -> Iterator[tuple[int, torch.Tensor]]:
    """Non-overlapping ``clip_frames``-frame clips of ``frames`` (any ``(T, ...)`` tensor), ``batch_size``
    clips at a time: yields ``(index of the first clip, tensor (B, clip_frames, ...))``.

    There are ``n_clips(T, clip_frames)`` clips; the last one is completed with zero frames. Cut uint8
    frames (zero = black, as the recipe pads before normalising), then preprocess each batch.
    """
    frames = torch.as_tensor(frames)
    if batch_size < 1 or clip_frames < 1:
        raise ValueError(f"batch_size {batch_size} and clip_frames {clip_frames} must be >= 1")
    total = n_clips(int(frames.shape[0]), clip_frames)
    for first in range(0, total, batch_size):
        count = min(batch_size, total - first)
        chunk = frames[first * clip_frames:(first + count) * clip_frames]
        missing = count * clip_frames - int(chunk.shape[0])
        if missing:
            chunk = torch.cat([chunk, chunk.new_zeros((missing, *chunk.shape[1:]))])
        yield first, chunk.reshape(count, clip_frames, *chunk.shape[1:])


# --- the network -----------------------------------------------------------------------------

class ResNeXtBottleneck3D(nn.Module):
    """1x1x1 -> grouped 3x3x3 (stride) -> 1x1x1, each with BN; ReLU after the sum with the shortcut."""

    def __init__(self, in_planes: int, planes: int, cardinality: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        mid = cardinality * (planes // 32)
        self.conv1 = nn.Conv3d(in_planes, mid, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, kernel_size=3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, planes * EXPANSION, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * EXPANSION)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNeXt3D(nn.Module):
    """3D ResNeXt trunk and a global average pool: ``(N, 3, T, H, W) -> (N, 2048)``.

    ``layers`` are the blocks per stage: (3, 4, 23, 3) is ResNeXt-101 (what the checkpoint holds);
    fewer blocks keep the same widths and parameter names (tests use (1, 1, 1, 1)).
    Parameter names follow the reference, so its state dict loads without renaming.
    """

    feature_dim = FEATURE_DIM

    def __init__(self, layers: Sequence[int] = LAYERS_101, cardinality: int = CARDINALITY):
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers {tuple(layers)}: four stages of >= 1 block each")
        self.layers = tuple(int(n) for n in layers)
        self.conv1 = nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        in_planes = 64
        for stage, (planes, blocks) in enumerate(zip(STAGE_PLANES, self.layers), start=1):
            stride = 1 if stage == 1 else 2
            downsample = nn.Sequential(
                nn.Conv3d(in_planes, planes * EXPANSION, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(planes * EXPANSION))  # shortcut B: every first block changes width
            modules = [ResNeXtBottleneck3D(in_planes, planes, cardinality, stride, downsample)]
            in_planes = planes * EXPANSION
            modules += [ResNeXtBottleneck3D(in_planes, planes, cardinality) for _ in range(1, blocks)]
            setattr(self, f"layer{stage}", nn.Sequential(*modules))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        # average in float32 even under autocast
        return x.float().mean(dim=(2, 3, 4))


def random_resnext3d(seed: int, layers: Sequence[int] = LAYERS_101) -> ResNeXt3D:
    """A randomly initialised ResNeXt3D, reproducible from ``seed`` (the global RNG is left untouched).

    Convolutions: Kaiming normal (fan out, ReLU), as Hara et al. initialise; BN weight 1, bias 0, except
    the last BN of every block, whose weight starts at 0 (the 3D analogue of torchvision's
    ``zero_init_residual``): each block starts as its shortcut. Without it the features of unrelated
    clips nearly coincide. Measured at full depth, 16 x 112 x 112, seed 0, on lavfi testsrc2, smptebars,
    mandelbrot and cellauto clips (pairwise cosines of the normalized inputs -0.06 .. 0.35): feature
    cosines 0.977-0.992 with plain init, 0.940-0.986 with the zero init; red vs blue 0.91 vs 0.74.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNeXt3D(layers)
        for module in model.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in model.modules():
            if isinstance(module, ResNeXtBottleneck3D):
                nn.init.zeros_(module.bn3.weight)
    return model


# --- weights ---------------------------------------------------------------------------------

def _read_checkpoint(path: Path) -> dict:
    """The state dict inside a checkpoint file: ``{"state_dict": ...}`` (Hara et al.) or a plain state
    dict (the HowTo100M extractor's copy), with a DataParallel ``module.`` prefix removed."""
    data = read_weights_file(path, "checkpoint or state dict")
    arch = data.get("arch")
    if isinstance(arch, str) and arch != ARCH:
        raise WeightsError(f"weights '{path}': a checkpoint of arch {arch!r}, not {ARCH!r}")
    state = data.get("state_dict", data)
    if not isinstance(state, Mapping) or not state:
        raise WeightsError(f"weights '{path}': its 'state_dict' is not a non-empty mapping")
    return {(key[len("module."):] if isinstance(key, str) and key.startswith("module.") else key): value
            for key, value in state.items()}


def check_state_dict(model: nn.Module, state: Mapping, source: str) -> dict:
    """``state`` made ready for ``model.load_state_dict(..., assign=True)``, or a WeightsError naming
    ``source`` and the first key (in the model's order) that does not fit.

    The Kinetics classifier (``fc.*``) is dropped; a missing ``num_batches_tracked`` (checkpoints of
    PyTorch < 0.4 have none; it is unused in eval mode) becomes 0.
    """
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k not in CLASSIFIER_KEYS}
    problems: list[tuple[str, str]] = []
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                state[key] = torch.zeros((), dtype=torch.long)
            else:
                problems.append((key, "missing"))
        elif not isinstance(state[key], torch.Tensor):
            problems.append((key, f"a {type(state[key]).__name__}, not a tensor"))
        elif tuple(state[key].shape) != tuple(tensor.shape):
            problems.append((key, f"shape {tuple(state[key].shape)} instead of {tuple(tensor.shape)}"))
    problems += [(key, "unexpected") for key in state if key not in expected]
    if problems:
        key, what = problems[0]
        raise WeightsError(
            f"weights '{source}': not a {ARCH} state dict of Hara et al.'s 3D ResNeXt "
            f"(cardinality 32, shortcut B): first bad key {key!r} ({what}); {len(problems)} bad key(s) in all")
    return {key: (value.float() if value.is_floating_point() else value) for key, value in state.items()}


@dataclass(frozen=True)
class ResNeXt3DWeights:
    """Where the parameters come from and how the output files describe them.

    Choose with :meth:`resolve` (``"none"`` or a checkpoint path) or the constructors below.
    """

    setting: str                # the configured value
    description: str            # recorded as the ``weights`` attribute of every output file
    pretrained: bool
    layers: tuple[int, ...] = LAYERS_101
    _state_dict: Callable[[], dict | None] = field(default=lambda: None, repr=False, compare=False)
    _seed: int | None = None

    @classmethod
    def random(cls, seed: int, layers: Sequence[int] = LAYERS_101) -> "ResNeXt3DWeights":
        depth = "" if tuple(layers) == LAYERS_101 else f", blocks {tuple(layers)}"
        return cls(setting="none", pretrained=False, layers=tuple(layers), _seed=int(seed),
                   description=f"none (random init, seed {seed}, zero-init last BN of each block{depth}): "
                               "NOT pretrained features")

    @classmethod
    def from_file(cls, path: str | Path, layers: Sequence[int] = LAYERS_101) -> "ResNeXt3DWeights":
        path = Path(path)
        if not path.is_file():
            raise WeightsError(
                f"weights '{path}': no such file. The Kinetics ResNeXt-101 checkpoint is not downloaded "
                f"automatically (there is no stable URL: it is published on Google Drive); get "
                f"{CHECKPOINT_SOURCES}, put it at {path}, or set features.video3d.weights to its path "
                "(or to none for random, NOT pretrained, features)")
        return cls(setting=str(path), pretrained=True, layers=tuple(layers),
                   description=f"{ARCH} Kinetics checkpoint (Hara et al.) from file {path.resolve()}",
                   _state_dict=lambda: _read_checkpoint(path))

    @classmethod
    def resolve(cls, setting: str, seed: int, layers: Sequence[int] = LAYERS_101) -> "ResNeXt3DWeights":
        """The weights named by ``features.video3d.weights`` (``seed`` only matters for ``none``)."""
        if setting == "none":
            return cls.random(seed, layers)
        return cls.from_file(setting, layers)

    def build(self) -> ResNeXt3D:
        """The feature model with these weights, in eval mode, on the CPU."""
        if self._seed is not None:
            return random_resnext3d(self._seed, self.layers).eval()
        state = self._state_dict()
        with torch.device("meta"):  # shapes only: skips a random init that loading overwrites
            model = ResNeXt3D(self.layers)
        model.load_state_dict(check_state_dict(model, state, self.setting), assign=True)
        return model.eval()


# --- the encoder -------------------------------------------------------------------------------

class ClipEncoder:
    """uint8 RGB frames at 24 fps in, one 2048-d feature per 16-frame clip out.

    ``encode(frames)`` does a whole video (``(n_clips, 2048)`` float32 numpy); ``encoder(clips)`` one
    batch of clips ``(B, clip_frames, H, W, 3)`` uint8 (float32 on the encoder's device). Frames are
    moved to the device as uint8 and preprocessed there. On CUDA: bfloat16 autocast and
    channels_last_3d memory; on the CPU float32.
    """

    def __init__(self, weights: ResNeXt3DWeights, device: torch.device, l2_normalize: bool = True,
                 batch_size: int = 64, recipe: Recipe3D = Recipe3D()):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size {batch_size} must be >= 1")
        self.weights = weights
        self.device = torch.device(device)
        self.l2_normalize = bool(l2_normalize)
        self.batch_size = int(batch_size)
        self.recipe = recipe
        self.preprocess = ClipPreprocess(recipe)
        self.cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last_3d if self.cuda else torch.contiguous_format
        self.model = weights.build().to(device=self.device, memory_format=self.memory_format)
        self.autocast_dtype = CUDA_AUTOCAST_DTYPE if self.cuda else None
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # clip shapes repeat

    @property
    def precision(self) -> str:
        return f"autocast {str(self.autocast_dtype).removeprefix('torch.')}" if self.autocast_dtype else "float32"

    @property
    def feature_dim(self) -> int:
        return FEATURE_DIM

    @torch.inference_mode()
    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 clips ``(B, clip_frames, H, W, 3)`` of any frame size -> float32 ``(B, 2048)`` on the device."""
        clips = torch.as_tensor(clips)
        if clips.dtype != torch.uint8 or clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"expected uint8 clips (B, T, H, W, 3), got {clips.dtype} {tuple(clips.shape)}")
        count, length = int(clips.shape[0]), int(clips.shape[1])
        frames = clips.to(self.device, non_blocking=True).reshape(count * length, *clips.shape[2:])
        frames = resize_and_crop(frames, self.recipe.short_side, self.recipe.crop)
        return self._forward(frames.reshape(count, length, *frames.shape[1:]))

    def _forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Resized and cropped uint8 clips ``(B, T, c, c, 3)`` -> features ``(B, 2048)`` on the device."""
        count, length = int(clips.shape[0]), int(clips.shape[1])
        clips = clips.to(self.device, non_blocking=True)
        x = self.preprocess.normalize(clips.reshape(count * length, *clips.shape[2:]))  # (B*T, 3, c, c)
        x = x.reshape(count, length, *x.shape[1:]).transpose(1, 2)                       # (B, 3, T, c, c)
        x = x.contiguous(memory_format=self.memory_format)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            features = self.model(x)
        features = features.float()
        if self.l2_normalize:
            features = F.normalize(features, dim=1)
        return features

    @torch.inference_mode()
    def encode(self, frames: torch.Tensor | np.ndarray) -> np.ndarray:
        """All clips of one video: uint8 ``(T, H, W, 3)`` at ``recipe.fps`` -> float32 ``(n_clips(T), 2048)``.

        Frames whose short side is already ``short_side`` are only cropped, on the host (a view); others
        are resized on the device (on the CPU: here).
        """
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        resize = min(int(frames.shape[1]), int(frames.shape[2])) != self.recipe.short_side
        if not (resize and self.cuda):
            frames = resize_and_crop(frames, self.recipe.short_side, self.recipe.crop)
            resize = False
        total = n_clips(int(frames.shape[0]), self.recipe.clip_frames)
        out = torch.empty((total, FEATURE_DIM), dtype=torch.float32, device=self.device)
        for first, clips in clip_batches(frames, self.recipe.clip_frames, self.batch_size):
            if self.cuda:
                clips = clips.pin_memory()  # an asynchronous host-to-device copy
            out[first:first + len(clips)] = self(clips) if resize else self._forward(clips)
        return out.cpu().numpy()
