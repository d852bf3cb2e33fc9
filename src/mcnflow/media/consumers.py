"""What ``mcnflow media`` makes from each video's one decode: one :class:`Consumer` per feature file.

A consumer has two halves:

* the **worker half** runs in the decode worker processes (it must stay cheap to copy there): it
  names the stream it wants from the decode (:meth:`Consumer.tap`: frames at some rate and size, or
  16 kHz audio), says when a video has nothing for it (:meth:`Consumer.skip`, e.g. no audio stream),
  and turns the stream into what the main process needs (:meth:`Consumer.prepare` for a whole video:
  the 1 fps frames, the log-mel spectrogram; :meth:`Consumer.prepare_chunk` for a *streaming*
  consumer, whose stream is too large to hold per video: the 24 fps frames of the 3D model);
* the **main half** (:meth:`Consumer.open` builds the model there, never in a worker) takes the
  prepared data (:meth:`accept`, :meth:`accept_chunk`, :meth:`end_video`), may batch across videos,
  and calls ``done(video_id, features, attrs)`` when a video's features are ready; ``discard`` drops a
  video whose decode failed after its chunks were sent; ``flush`` runs what is left at the end.

:meth:`Consumer.worker_half` is the copy the decode workers get (no model, nothing in flight).

The three consumers: :class:`Frames2D` (ResNet-152 at ``features.video.fps``, the frames scaled to
short side ``features.video.short_side`` by ffmpeg, batched across videos), :class:`LogMel` (DaveNet
log-mel at 16 kHz) and :class:`Clips3D` (3D ResNeXt-101 at ``features.video3d.fps``, streamed in
chunks of whole clips). Each is the ``extractor`` of its entry in :data:`mcnflow.core.streams.STREAMS`;
a new model plugs in by subclassing :class:`Consumer` and naming the class in a new entry there
(docs/feature_streams.md).
"""

from __future__ import annotations

import abc
import copy
import importlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from mcnflow.core.media_probe import MediaInfo
from mcnflow.core.status import FeatureStatus
from mcnflow.core.streams import FeatureStream
from mcnflow.features.frames import output_size
from mcnflow.media.decode import AudioTap, Tap, VideoTap
from mcnflow.normalize import NormalizeSettings

Done = Callable[[str, np.ndarray, dict], None]


class ConsumerSkip(Exception):
    """This consumer has no features for the video; ``status`` (a FeatureStatus) and ``message`` say why."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class VideoContext:
    """What the main half knows about a video besides the prepared data."""

    video_id: str
    attrs: dict            # per-video facts every consumer records (duration, source, source_checksum, ...)
    info: MediaInfo | None = None  # the download's probe (used by GPU decode)
    identity: dict = field(default_factory=dict)  # store.source_identity of the download (checked on resume)


class Consumer(abc.ABC):
    """One feature file (and ledger) made from the decoded streams of each video: the extractor of one
    feature stream (its name, HDF5 modality and ledger length come from the stream's table entry)."""

    streaming = False

    def __init__(self, stream: FeatureStream, settings: Mapping[str, Any], normalize: NormalizeSettings,
                 encoder: Any = None):
        self.stream = stream
        self.settings = dict(settings)
        self.normalize = normalize
        self.encoder = encoder

    @property
    def name(self) -> str:
        """The output's name: the stream's ("video", "audio", "video3d")."""
        return self.stream.name

    @property
    def modality(self) -> str:
        """The HDF5 modality attribute ("video" for 2D and 3D, "audio")."""
        return self.stream.modality

    @property
    def fingerprint_kind(self) -> str:
        """Parts of different streams never pass for each other."""
        return self.stream.name

    def worker_half(self) -> "Consumer":
        """A copy for the decode workers: cheap to pickle, without the main half's model and state."""
        clone = copy.copy(self)
        clone._drop_main_half()
        return clone

    def _drop_main_half(self) -> None:
        """Forget what only the main half holds (the model, videos in flight)."""
        self.encoder = None

    # --- worker half ----------------------------------------------------------------------------
    @abc.abstractmethod
    def tap(self) -> Tap:
        """The stream this consumer needs from the decode."""

    def skip(self, info: MediaInfo) -> ConsumerSkip | None:
        """Why a video has nothing for this consumer (decided from the probe), or None."""
        return None

    def prepare(self, data: np.ndarray) -> Any:
        """Whole-video consumers: the tap's whole stream -> what :meth:`accept` gets (raise ConsumerSkip)."""
        raise NotImplementedError

    def prepare_chunk(self, chunk: np.ndarray) -> Any:
        """Streaming consumers: one chunk of the stream -> what :meth:`accept_chunk` gets."""
        import torch

        return torch.from_numpy(chunk)

    # --- main half ------------------------------------------------------------------------------
    def open(self) -> None:
        """Build what runs in the main process (models); called once, before any accept."""

    @abc.abstractmethod
    def root_attrs(self) -> dict:
        """The HDF5 root attributes of this consumer's shard file (after :meth:`open`)."""

    def accept(self, video: VideoContext, prepared: Any, done: Done) -> None:
        """A whole video's prepared data; call ``done`` now or later (batching)."""
        raise NotImplementedError

    def accept_chunk(self, video_id: str, chunk: Any) -> None:
        raise NotImplementedError

    def end_video(self, video: VideoContext, done: Done) -> None:
        """Streaming consumers: the last chunk of ``video`` has arrived."""
        raise NotImplementedError

    def discard(self, video_id: str) -> None:
        """Forget a video whose decode failed after some of its chunks arrived."""

    def flush(self) -> None:
        """Finish every pending video (the end of the shard)."""


# --- 2D: ResNet-152 ---------------------------------------------------------------------------------

class Frames2D(Consumer):
    """ResNet-152 features, one row per sampled frame (``features.video``), batched across videos."""

    def __init__(self, stream, settings, normalize, encoder=None):
        from mcnflow.features.video import check_settings

        super().__init__(stream, check_settings(settings), normalize, encoder)
        self._pipeline = None

    @property
    def frame_size(self) -> tuple[int, int]:
        return output_size(self.normalize.width, self.normalize.height, int(self.settings["short_side"]))

    def tap(self) -> VideoTap:
        return VideoTap(self.name, float(self.settings["fps"]), size=self.frame_size)

    def prepare(self, data: np.ndarray):
        import torch

        return torch.from_numpy(data)

    def _drop_main_half(self) -> None:
        super()._drop_main_half()
        self._pipeline = None

    def open(self) -> None:
        from mcnflow.features.video import build_encoder

        if self.encoder is None:
            self.encoder = build_encoder(self.settings)

    def root_attrs(self) -> dict:
        from mcnflow.features.video import root_attrs

        attrs = root_attrs(self.settings, self.encoder)
        attrs["resize"] = (f"the normalized {self.normalize.width}x{self.normalize.height} picture "
                           f"(normalize.resize_mode {self.normalize.resize_mode}), then short side "
                           f"{self.settings['short_side']}: {self.frame_size[0]}x{self.frame_size[1]}")
        return attrs

    def _pipeline_for(self, done: Done):
        from mcnflow.features.video import BatchPipeline

        if self._pipeline is None:
            def finished(video_id: str, features: np.ndarray, attrs: dict) -> None:
                done(video_id, features.astype(np.float16), attrs)
            self._pipeline = BatchPipeline(self.encoder, int(self.settings["batch_size"]), finished)
        return self._pipeline

    def accept(self, video: VideoContext, prepared, done: Done) -> None:
        frames = prepared
        width, height = int(frames.shape[2]), int(frames.shape[1])
        attrs = {**video.attrs, "n_frames": int(frames.shape[0]), "frame_width": width, "frame_height": height}
        self._pipeline_for(done).add(video.video_id, frames, attrs)

    def flush(self) -> None:
        if self._pipeline is not None:
            self._pipeline.flush()


# --- audio: DaveNet log-mel ---------------------------------------------------------------------------

class LogMel(Consumer):
    """DaveNet log-mel spectrograms (``features.audio``), computed in the decode workers (no model:
    ``encoder`` is not used)."""

    def __init__(self, stream, settings, normalize, encoder=None):
        from mcnflow.features.audio import check_settings

        super().__init__(stream, check_settings(settings), normalize, encoder)

    def tap(self) -> AudioTap:
        return AudioTap(self.name, int(self.settings["sample_rate"]))

    def skip(self, info: MediaInfo) -> ConsumerSkip | None:
        if not info.has_audio:
            return ConsumerSkip(FeatureStatus.NO_AUDIO, "the video has no audio stream")
        return None

    def prepare(self, data: np.ndarray):
        from mcnflow.features.audio import TooShort, spectrogram_of

        try:
            spectrogram, n_samples = spectrogram_of(data, self.settings)
        except TooShort as exc:
            raise ConsumerSkip(FeatureStatus.TOO_SHORT, str(exc)) from None
        return spectrogram, n_samples

    def root_attrs(self) -> dict:
        from mcnflow.features.audio import shard_attrs

        return shard_attrs(self.settings)

    def accept(self, video: VideoContext, prepared, done: Done) -> None:
        spectrogram, n_samples = prepared
        sample_rate = int(self.settings["sample_rate"])
        done(video.video_id, spectrogram, {"duration": n_samples / sample_rate, "n_samples": n_samples})


# --- 3D: ResNeXt-101 clips ---------------------------------------------------------------------------

@dataclass
class _ClipVideo:
    pending: list = field(default_factory=list)   # uint8 frame chunks not yet cut into clips
    pending_frames: int = 0
    rows: list = field(default_factory=list)      # float32 (k, 2048) feature blocks
    n_frames: int = 0


class Clips3D(Consumer):
    """3D ResNeXt-101 features of non-overlapping clips (``features.video3d``), streamed: the 24 fps
    frames arrive in chunks and are encoded a batch of whole clips at a time, never held per video."""

    streaming = True

    def __init__(self, stream, settings, normalize, encoder=None):
        from mcnflow.features.video3d import check_settings, recipe_from_settings

        super().__init__(stream, check_settings(settings), normalize, encoder)
        self.recipe = recipe_from_settings(self.settings)
        self._videos: dict[str, _ClipVideo] = defaultdict(_ClipVideo)

    @property
    def frame_size(self) -> tuple[int, int]:
        return output_size(self.normalize.width, self.normalize.height, self.recipe.short_side)

    def tap(self) -> VideoTap:
        # ffmpeg scales (short side 112); the encoder takes the centre crop (resnext3d.resize_and_crop)
        return VideoTap(self.name, float(self.recipe.fps), size=self.frame_size,
                        chunk_frames=self.recipe.clip_frames * 4)

    def _drop_main_half(self) -> None:
        super()._drop_main_half()
        self._videos = defaultdict(_ClipVideo)

    def open(self) -> None:
        from mcnflow.features.video3d import build_encoder

        if self.encoder is None:
            self.encoder = build_encoder(self.settings)
        elif self.encoder.recipe != self.recipe:
            raise ValueError(f"the encoder's recipe {self.encoder.recipe} is not the settings' {self.recipe}")

    def root_attrs(self) -> dict:
        from mcnflow.features.video3d import root_attrs

        attrs = root_attrs(self.settings, self.encoder)
        attrs["sampling"] = (f"the normalized {self.normalize.width}x{self.normalize.height} picture at "
                             f"{self.normalize.fps} fps, then " + str(attrs["sampling"]))
        return attrs

    def accept_chunk(self, video_id: str, chunk) -> None:
        import torch

        state = self._videos[video_id]
        state.pending.append(chunk)
        state.pending_frames += int(chunk.shape[0])
        state.n_frames += int(chunk.shape[0])
        per_batch = self.recipe.clip_frames * self.encoder.batch_size
        if state.pending_frames >= per_batch:
            frames = torch.cat(state.pending)
            whole = (int(frames.shape[0]) // per_batch) * per_batch
            state.rows.append(self.encoder.encode(frames[:whole]))
            state.pending = [frames[whole:]] if whole < frames.shape[0] else []
            state.pending_frames = int(frames.shape[0]) - whole

    def end_video(self, video: VideoContext, done: Done) -> None:
        import torch

        state = self._videos.pop(video.video_id, _ClipVideo())
        if state.pending:
            state.rows.append(self.encoder.encode(torch.cat(state.pending)))  # the last clip padded with black
        features = np.concatenate(state.rows) if state.rows else np.zeros((0, self.encoder.feature_dim), np.float32)
        attrs = {**video.attrs, "n_frames": state.n_frames, "n_clips": len(features),
                 "padded_frames": len(features) * self.recipe.clip_frames - state.n_frames,
                 "frame_width": self.recipe.crop, "frame_height": self.recipe.crop}
        done(video.video_id, features.astype(np.float16), attrs)

    def discard(self, video_id: str) -> None:
        self._videos.pop(video_id, None)


def consumer_class(stream: FeatureStream) -> type[Consumer]:
    """The consumer class a media stream's ``extractor`` names ("module:Class")."""
    module, _, name = stream.extractor.partition(":")
    found = getattr(importlib.import_module(module), name, None)
    if not (isinstance(found, type) and issubclass(found, Consumer)):
        raise TypeError(f"feature stream {stream.name!r}: extractor {stream.extractor!r} is not a media Consumer")
    return found
