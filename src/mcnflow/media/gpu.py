"""``media.decode: cuda``: the 2D model's sampled frames decoded on the GPU (torchcodec, NVDEC).

Opt-in and not measured on this project's machines (none had a GPU); CPU decode (ffmpeg) stays the
default. What it does, per video, in the main process:

1. picks the frames the CPU path's samplers pick: the normalized stream's frame ``j`` (at
   ``normalize.fps``) is the last source frame before time ``(j + 0.5) / fps``; the 1 fps sampler
   keeps the normalized frames :func:`mcnflow.normalize.sampler_frame_indices` names; so frame ``k``
   is the source frame played at ``start + (j_k + 0.5) / fps - epsilon``
   (``VideoDecoder.get_frames_played_at``);
2. applies the normalization's geometry on the device (:func:`normalize_frames`: rotation, resize to
   the same even size as ffmpeg, pad / crop / stretch to 454x256, then short side 224), bicubic with
   antialiasing. The frames are therefore close to, not bit-equal with, the CPU path's (another
   scaler and YUV->RGB conversion); the test suite bounds the difference on the CPU build of
   torchcodec.

Audio, probing and the ledgers stay on the CPU (the decode workers). ``normalize.keep: true`` is
refused with ``cuda`` (the x264 encode needs every frame decoded on the CPU anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mcnflow.core.config import ConfigError
from mcnflow.core.media_probe import MediaInfo
from mcnflow.media.decode import VideoTap
from mcnflow.normalize import NormalizeSettings, sampler_frame_indices, scaled_size

# a sampled time sits this far before the boundary where the next source frame takes over
EPSILON = 1e-4


def require_gpu_decode(device: str = "cuda") -> None:
    """Fail with a message that says what to install or change when GPU decode cannot run."""
    try:
        import torchcodec  # noqa: F401
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception as exc:  # ImportError, or an FFmpeg library torchcodec cannot load
        raise ConfigError(f"config key 'media.decode': 'cuda' needs torchcodec with CUDA support "
                          f"(pip install torchcodec, the build matching torch {torch.__version__}), and "
                          f"FFmpeg's shared libraries; importing it failed: {type(exc).__name__}: {exc}. "
                          "Or set media.decode: cpu") from exc
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'media.decode': 'cuda' but torch sees no CUDA device; set media.decode: cpu")


def sample_times(n_normalized: int, start: float, settings: NormalizeSettings, sample_fps: float) -> list[float]:
    """Source times (seconds) of the frames the ``sample_fps`` sampler takes from the normalized stream."""
    picks = sampler_frame_indices(n_normalized, settings.fps, sample_fps)
    return [start + (j + 0.5) / settings.fps - EPSILON for j in picks]


def normalize_frames(frames: torch.Tensor, info: MediaInfo, settings: NormalizeSettings,
                     size: tuple[int, int] | None) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` as decoded (stored orientation) -> uint8 ``(N, h, w, 3)``: the normalization's
    picture (rotated as displayed, scaled to ffmpeg's even size, padded / cropped / stretched to
    ``settings.width`` x ``settings.height``), then scaled to ``size`` = (w, h) when given."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected uint8 frames (N, 3, H, W), got {frames.dtype} {tuple(frames.shape)}")
    turns = {90: -1, 180: 2, 270: 1}.get(info.rotation % 360, 0)
    stored = (info.height, info.width)
    if turns and tuple(frames.shape[2:]) == stored:  # not yet turned by the decoder
        frames = torch.rot90(frames, k=turns, dims=(2, 3))
    x = frames.float()
    width, height = settings.width, settings.height
    if settings.resize_mode == "stretch":
        x = _resize(x, width, height)
    else:
        cover = settings.resize_mode == "crop"
        w, h = scaled_size(info.display_size, width, height, cover=cover)
        x = _resize(x, w, h)
        if cover:
            x0, y0 = (w - width) // 2, (h - height) // 2
            x = x[:, :, y0:y0 + height, x0:x0 + width]
        else:
            left, top = (width - w) // 2, (height - h) // 2
            x = F.pad(x, (left, width - w - left, top, height - h - top), value=0.0)
    x = x.round_().clamp_(0, 255)
    if size is not None and tuple(size) != (width, height):
        x = _resize(x, *size).round_().clamp_(0, 255)
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _resize(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if tuple(x.shape[2:]) == (height, width):
        return x
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)


@dataclass
class GpuFrameSampler:
    """Decodes one video's sampled frames with torchcodec on ``device`` and normalizes them there."""

    settings: NormalizeSettings
    sample_fps: float
    size: tuple[int, int] | None
    device: str = "cuda"

    @classmethod
    def for_settings(cls, settings: NormalizeSettings, tap: VideoTap, device: str = "cuda") -> "GpuFrameSampler":
        require_gpu_decode(device)
        return cls(settings, float(tap.fps), tap.size, device)

    def expected(self, info: MediaInfo) -> int:
        """Normalized frames of the video (what the CPU path's fps filter makes of its duration)."""
        return max(1, int(math.floor((info.duration or 0.0) * self.settings.fps + 0.5)))

    def sample(self, info: MediaInfo) -> torch.Tensor:
        from torchcodec.decoders import VideoDecoder

        decoder = VideoDecoder(info.path, device=self.device, seek_mode="approximate",
                               stream_index=info.video_stream_index)
        meta = decoder.metadata
        start = float(meta.begin_stream_seconds or 0.0)
        end = float(meta.end_stream_seconds or (start + (info.duration or 0.0)))
        times = [t for t in sample_times(self.expected(info), start, self.settings, self.sample_fps) if t < end]
        if not times:
            times = [start]  # shorter than half a sampling period: the first frame, as on the CPU
        batch = decoder.get_frames_played_at(seconds=times)
        return normalize_frames(batch.data, info, self.settings, self.size)

    def count_problems(self, info: MediaInfo, n_frames: int) -> list[str]:
        """The CPU path verifies durations; here: as many sampled frames as the duration implies (+-1)."""
        from mcnflow.features.frames import expected_frames

        if not info.duration:
            return [] if n_frames else ["no frame decoded"]
        expected = expected_frames(info.duration, self.sample_fps)
        if abs(n_frames - expected) > 1:
            return [f"GPU decode gave {n_frames} sampled frames, {expected} expected from {info.duration} s"]
        return []
