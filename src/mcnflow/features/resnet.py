"""ResNet-152 frame features as in the HowTo100M 2D recipe, and the preprocessing that goes with them.

A :class:`ResNet152Weights` is the one object a caller chooses: it knows where the parameters come
from, how to describe them in the output files, and which input normalization they expect. A
:class:`FrameEncoder` is built from it, so preprocessing and weights cannot be mixed up.

Model (``antoine77340/video_feature_extractor:model.py``): torchvision ``resnet152`` without its
``avgpool`` and ``fc`` children, followed by the mean over H and W of the conv5 output: one 2048-d
vector per frame, computed on the whole non-square frame.
"""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models import ResNet152_Weights

from mcnflow.core.config import ConfigError

FEATURE_DIM = 2048
MODEL_NAME = "torchvision resnet152, conv5 mean over H,W (avgpool and fc removed), 2048-d"
# The official extractor's normalization (video_feature_extractor:preprocessing.py), which is also
# what torchvision's ImageNet weights were trained with.
RECIPE_MEAN = (0.485, 0.456, 0.406)
RECIPE_STD = (0.229, 0.224, 0.225)
# Mixed precision used on CUDA: bfloat16 keeps float32's range, so random-init activations cannot
# overflow the way they could in float16; features are stored as float16 anyway.
CUDA_AUTOCAST_DTYPE = torch.bfloat16


class WeightsError(ConfigError):
    """The configured weights cannot be loaded; the message names the source and what to do."""


@dataclass(frozen=True)
class FramePreprocess:
    """uint8 RGB frames (N, H, W, 3) -> float32 (N, 3, H, W): ``/255`` then ``(x - mean) / std`` per channel."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # per-device copies of mean/std: building them per batch would make a blocking host-to-GPU copy
    _constants: dict = field(default_factory=dict, repr=False, compare=False)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            self._constants[device] = tuple(torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1).to(device)
                                            for v in (self.mean, self.std))
        return self._constants[device]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        mean, std = self._on(frames.device)
        # NHWC permuted to NCHW is already channels_last in memory; float() keeps those strides.
        x = frames.permute(0, 3, 1, 2).float().div_(255.0)
        return x.sub_(mean).div_(std)


class ResNet152Features(nn.Module):
    """ResNet-152 trunk (conv1 .. layer4) and a global average pool: (N, 3, H, W) -> (N, 2048)."""

    feature_dim = FEATURE_DIM

    def __init__(self, resnet: torchvision.models.ResNet):
        super().__init__()
        # children()[:-2] drops avgpool and fc, exactly as the official extractor does
        self.trunk = nn.Sequential(*list(resnet.children())[:-2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # average in float32 even under autocast (conv5 maps are 7x13 = 91 values per channel at 224x397)
        return self.trunk(x).float().mean(dim=(2, 3))


def random_resnet152(seed: int) -> torchvision.models.ResNet:
    """A randomly initialised resnet152, reproducible from ``seed`` (the global RNG is left untouched).

    ``zero_init_residual=True`` starts every residual block as the identity; plain random init
    collapses all inputs to nearly the same feature (cosine ~1), which would make the features useless
    even as a plumbing check.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.resnet152(weights=None, zero_init_residual=True)


def _imagenet_state_dict() -> dict:
    weights = ResNet152_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False, map_location="cpu", weights_only=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise WeightsError(
            f"weights 'imagenet': could not get {weights.url} ({exc}). Without internet, download it "
            f"elsewhere and put it at {cache} (torch hub cache; set TORCH_HOME to move it), or set "
            f"features.video.weights to the path of a resnet152 state dict") from exc


def read_weights_file(path: Path, what: str = "state dict") -> Mapping:
    """The mapping a weights file holds (``torch.load``, tensors only), or a WeightsError naming the
    file and saying it is not ``what``."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not a weights file"
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise WeightsError(f"weights '{path}': cannot be read as a torch {what} "
                           f"({type(exc).__name__}: {first_line})") from exc
    if not isinstance(data, Mapping):
        raise WeightsError(f"weights '{path}': holds a {type(data).__name__}, not a {what}")
    return data


def _state_dict_mismatch(expected: dict, state: dict, examples: int = 3) -> str:
    """A short description of how ``state`` differs from ``expected`` ('' when it fits)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(state[k].shape)} instead of {tuple(expected[k].shape)}" for k in expected
                if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = [f"{len(items)} {what} (e.g. {', '.join(items[:examples])})"
             for what, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("tensors of another shape", reshaped)) if items]
    return "; ".join(parts)


@dataclass(frozen=True)
class ResNet152Weights:
    """Where the parameters come from, how the output files describe them, and their preprocessing.

    Choose with :meth:`resolve` (``"imagenet"``, ``"none"`` or a path) or the constructors below.
    """

    setting: str                 # the configured value
    description: str             # recorded as the ``weights`` attribute of every output file
    pretrained: bool
    preprocess: FramePreprocess
    _state_dict: Callable[[], dict | None] = field(repr=False, compare=False)
    _seed: int | None = None

    @classmethod
    def imagenet(cls) -> "ResNet152Weights":
        transforms = ResNet152_Weights.IMAGENET1K_V1.transforms()
        return cls(setting="imagenet",
                   description=f"torchvision ResNet152_Weights.IMAGENET1K_V1 ({ResNet152_Weights.IMAGENET1K_V1.url})",
                   pretrained=True,
                   preprocess=FramePreprocess(tuple(transforms.mean), tuple(transforms.std)),
                   _state_dict=_imagenet_state_dict)

    @classmethod
    def random(cls, seed: int) -> "ResNet152Weights":
        return cls(setting="none",
                   description=f"none (random init, seed {seed}, zero_init_residual): NOT pretrained features",
                   pretrained=False, preprocess=FramePreprocess(RECIPE_MEAN, RECIPE_STD),
                   _state_dict=lambda: None, _seed=seed)

    @classmethod
    def from_file(cls, path: str | Path) -> "ResNet152Weights":
        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"weights '{path}': not 'imagenet' or 'none', and no such file")
        return cls(setting=str(path), description=f"resnet152 state dict from file {path.resolve()}",
                   pretrained=True, preprocess=FramePreprocess(RECIPE_MEAN, RECIPE_STD),
                   _state_dict=lambda: dict(read_weights_file(path)))

    @classmethod
    def resolve(cls, setting: str, seed: int) -> "ResNet152Weights":
        """The weights named by ``features.video.weights`` (``seed`` only matters for ``none``)."""
        if setting == "imagenet":
            return cls.imagenet()
        if setting == "none":
            return cls.random(seed)
        return cls.from_file(setting)

    def build(self) -> ResNet152Features:
        """The feature model with these weights, in eval mode, on the CPU."""
        if self._seed is not None:
            return ResNet152Features(random_resnet152(self._seed)).eval()
        state = self._state_dict()
        with torch.device("meta"):  # shapes only: skips a random init that loading would overwrite
            resnet = torchvision.models.resnet152(weights=None)
        problem = _state_dict_mismatch(resnet.state_dict(), state)
        if problem:
            raise WeightsError(f"weights '{self.setting}': not a torchvision resnet152 state dict ({problem})")
        resnet.load_state_dict(state, assign=True)
        return ResNet152Features(resnet).eval()


class FrameEncoder:
    """uint8 RGB frames in, one 2048-d feature per frame out (on the encoder's device, float32).

    Channels-last memory everywhere (measured on this project's CPU: 0.37 s vs 0.58 s per 397x224
    frame; on GPUs it is what the convolution kernels want) and autocast on CUDA.
    """

    def __init__(self, weights: ResNet152Weights, device: torch.device, l2_normalize: bool,
                 compile: bool = False, batch_size: int | None = None):
        self.weights = weights
        self.device = device
        self.l2_normalize = l2_normalize
        self.model = weights.build().to(device=device, memory_format=torch.channels_last)
        self.autocast_dtype = CUDA_AUTOCAST_DTYPE if device.type == "cuda" else None
        if device.type == "cuda":
            # frame sizes repeat (all normalized videos are 454x256), so cuDNN's per-shape search pays off
            torch.backends.cudnn.benchmark = True
        # features.video.compile: torch.compile of the trunk (opt-in; the first batch of each shape
        # compiles for tens of seconds). Partial batches are padded to ``batch_size`` so one shape serves all.
        self.compiled = bool(compile)
        self.batch_size = int(batch_size) if batch_size else None
        self._forward = torch.compile(self.model, dynamic=False) if self.compiled else self.model

    @property
    def precision(self) -> str:
        text = f"autocast {str(self.autocast_dtype).removeprefix('torch.')}" if self.autocast_dtype else "float32"
        return text + (", torch.compile" if self.compiled else "")

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        n = int(frames.shape[0])
        if self.compiled and self.batch_size and n < self.batch_size:
            frames = torch.cat([frames, frames.new_zeros((self.batch_size - n, *frames.shape[1:]))])
        x = self.weights.preprocess(frames.to(self.device, non_blocking=True))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            features = self._forward(x)
        features = features[:n].float()
        if self.l2_normalize:
            features = F.normalize(features, dim=1)
        return features
