"""ResDAVEnet (Harwath et al.), the audio trunk of AVLnet and MCN, randomly initialised.

Input: a log-mel spectrogram (B, n_mels, T). The first convolution spans all mel bins, so every
later layer is a 1-D convolution over time (written as 1 x k 2-D convolutions, as the original).
Four residual stages, each halving time, give (B, 1024, ceil(T / 16)).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

# MCN's / AVLnet's ResDAVEnet: the stem's width, then one width per stage of two basic blocks.
DAVENET_WIDTHS = (128, 128, 256, 512, 1024)
DAVENET_LAYERS = (2, 2, 2, 2)


def conv1xk(in_channels: int, out_channels: int, width: int = 9, stride: int = 1) -> nn.Conv2d:
    """A 1 x ``width`` convolution over time, padded so stride 1 keeps the length."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=(1, width), stride=(1, stride),
                     padding=(0, width // 2), bias=False)


class SpeechBasicBlock(nn.Module):
    """Two 1 x k convolutions with batch norm; a 1 x 1 projection on the shortcut when needed."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 9, stride: int = 1):
        super().__init__()
        self.conv1 = conv1xk(in_channels, out_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv1xk(out_channels, out_channels, width)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(1, stride), bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResDAVEnet(nn.Module):
    """Spectrogram -> (B, widths[-1], T / 2**len(layers)) features, plus the two poolings MCN uses."""

    def __init__(self, n_mels: int = 40, widths: Sequence[int] = DAVENET_WIDTHS,
                 layers: Sequence[int] = DAVENET_LAYERS, width: int = 9):
        super().__init__()
        widths, layers = tuple(widths), tuple(layers)
        if len(widths) != len(layers) + 1:
            raise ValueError("widths = the stem's width followed by one width per stage")
        self.n_mels = n_mels
        self.out_dim = widths[-1]
        self.time_stride = 2 ** len(layers)
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], kernel_size=(n_mels, 1), bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        in_channels = widths[0]
        for out_channels, blocks in zip(widths[1:], layers):
            stage = [SpeechBasicBlock(in_channels, out_channels, width, stride=2)]
            stage += [SpeechBasicBlock(out_channels, out_channels, width) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self._init_weights()

    def _init_weights(self) -> None:
        # He initialisation over the output fan, as the original DAVEnet code.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, out_dim, ceil(T / time_stride))."""
        if spectrogram.dim() != 3 or spectrogram.shape[1] != self.n_mels:
            raise ValueError(f"expected (batch, {self.n_mels}, frames), got {tuple(spectrogram.shape)}")
        x = self.stem(spectrogram.unsqueeze(1))
        return self.stages(x).squeeze(2)

    def pool(self, features: torch.Tensor, nframes: torch.Tensor) -> torch.Tensor:
        """Mean over the output frames that come from real input: the first max(1, nframes // stride).

        This is MCN's evaluation pooling (model_kmeans_ICCV.py:109-120). MCN's training pooling is
        :meth:`pool_all`, a mean over every frame, zero padding included (model:121-122).
        """
        steps = features.shape[-1]
        valid = torch.div(nframes.to(features.device).long(), self.time_stride, rounding_mode="floor")
        valid = valid.clamp(min=1, max=steps)
        mask = torch.arange(steps, device=features.device).unsqueeze(0) < valid.unsqueeze(1)
        mask = mask.to(features.dtype).unsqueeze(1)
        return (features * mask).sum(dim=-1) / valid.unsqueeze(1).to(features.dtype)

    @staticmethod
    def pool_all(features: torch.Tensor) -> torch.Tensor:
        """Mean over every output frame, those computed from zero padding too (MCN's training pooling)."""
        return features.mean(dim=-1)
