"""The feature streams: one declaration per feature file a shard gets.

Each :class:`FeatureStream` says what one stream is (its name, dimension, rate, extractor, where it is
stored and what its ledger counts) and who reads it (the modality it feeds, the
``training.video_features`` choice that selects a video stream). Everything that makes, counts or reads
features iterates :data:`STREAMS` instead of naming streams:

* planning (:mod:`mcnflow.core.plan`): the media stage's settings and schema, the feature sets each
  branch reads, the streams the media stage makes;
* the media stage (:mod:`mcnflow.media.stage`): one consumer per media stream (``extractor``), its
  ``--<name>-output`` / ``--<name>-ledger`` flags, the ledger length along ``time_axis``;
* feature statistics (:mod:`mcnflow.features.stats`), the training and evaluation readers
  (``--<name>`` shard flags, the rate every reader checks), clip cutting (:mod:`mcnflow.model.inputs`);
* the workflow's rules (outputs, inputs and flags) and the tests.

Adding a stream is one entry here, its extractor, its settings section ``features.<name>`` in the
config schema, and its tests: docs/feature_streams.md has the recipe. This module imports nothing
heavy: every stage, the Snakefile included, reads it at planning time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from mcnflow.core.config import ConfigError

MEDIA = "media"   # made by `mcnflow media` from the one decode of each video
TEXT = "text"     # made by `mcnflow extract text` from the captions

# media.decode: cuda -- what the stream's frames come from
GPU = "gpu"       # decoded on the GPU (torchcodec)
CPU = "cpu"       # still decoded by ffmpeg on the CPU (audio)
NO_GPU = "none"   # cannot run with GPU decoding: the setting is refused


@dataclass(frozen=True)
class FeatureStream:
    """One feature stream: ``results/features/<corpus>/<name>/shard-NNNNN.{h5,tsv}``."""

    name: str                   # folder, ledger folder, CLI flag --<name>, media output --<name>-output
    modality: str               # the MCN branch it feeds (video, audio, text); the HDF5 `modality` attribute
    producer: str               # MEDIA or TEXT: the stage (and rule) that writes it
    extractor: str              # "module:Class" of its media consumer, or the module of the text stage
    dim: int | str              # feature dimension, or the config key that sets it
    rate: float | None          # rows per second of video time along time_axis (None: one row per caption)
    rate_attr: str | None       # the HDF5 root attribute every reader checks ...
    rate_attr_value: float | None  # ... against this value (the rate as the extractor records it)
    time_axis: int              # the axis of a video's array that runs over time (the ledger's length)
    length_unit: str            # what a ledger row's `length` counts
    description: str
    video_feature: str | None = None   # the training.video_features choice that selects it (video streams)
    always: bool = True         # made for every feature corpus (False: only when an experiment reads it)
    trained: bool = True        # MCN reads it (training and evaluation); False: made and counted only
    cuda_decode: str = CPU      # with media.decode: cuda (GPU, CPU or NO_GPU)

    @property
    def section(self) -> str:
        """Its settings: config key ``features.<name>``."""
        return self.name


STREAMS: tuple[FeatureStream, ...] = (
    FeatureStream(
        name="video", modality="video", producer=MEDIA, extractor="mcnflow.media.consumers:Frames2D",
        dim=2048, rate=1.0, rate_attr="fps", rate_attr_value=1.0, time_axis=0, length_unit="seconds (1 fps frames)",
        description="ResNet-152 (ImageNet) pool5 of 1 fps frames, short side 224 (MCN's 2D stream)",
        video_feature="2d", cuda_decode=GPU),
    FeatureStream(
        name="video3d", modality="video", producer=MEDIA, extractor="mcnflow.media.consumers:Clips3D",
        dim=2048, rate=1.5, rate_attr="rows_per_second", rate_attr_value=1.5, time_axis=0,
        length_unit="16-frame clips (1.5/s)",
        description="3D ResNeXt-101 (Kinetics) of non-overlapping 16-frame clips at 24 fps (MCN's 3D stream)",
        video_feature="3d", always=False, cuda_decode=NO_GPU),
    FeatureStream(
        name="audio", modality="audio", producer=MEDIA, extractor="mcnflow.media.consumers:LogMel",
        dim="features.audio.n_mels", rate=100.0, rate_attr="hop_ms", rate_attr_value=10.0, time_axis=1,
        length_unit="log-mel frames (10 ms)",
        description="DaveNet log-mel spectrogram of the 16 kHz mono audio (40 mels, 25 ms window, 10 ms hop)"),
    FeatureStream(
        name="text", modality="text", producer=TEXT, extractor="mcnflow.features.text",
        dim="training.word_dim", rate=None, rate_attr=None, rate_attr_value=None, time_axis=0,
        length_unit="captions",
        description="caption tokens with their times, and the word2vec vectors of the shard's words"),
)

NAMES: tuple[str, ...] = tuple(s.name for s in STREAMS)


def stream(name: str) -> FeatureStream:
    """The stream called ``name``; an unknown name is an error listing the streams."""
    for s in STREAMS:
        if s.name == name:
            return s
    raise ConfigError(f"unknown feature stream {name!r}; streams: {', '.join(s.name for s in STREAMS)}")


def media_streams() -> tuple[FeatureStream, ...]:
    """The streams `mcnflow media` can make, in table order."""
    return tuple(s for s in STREAMS if s.producer == MEDIA)


def video_streams() -> tuple[FeatureStream, ...]:
    """The video streams, in the order MCN concatenates them (2D, then 3D)."""
    return tuple(s for s in STREAMS if s.modality == "video")


def by_video_feature(choice: str) -> FeatureStream:
    """The video stream a ``training.video_features`` entry selects (2d -> video, 3d -> video3d)."""
    for s in video_streams():
        if s.video_feature == choice:
            return s
    raise ConfigError(f"config key 'training.video_features': {choice!r} is not allowed; allowed values: "
                      + ", ".join(repr(s.video_feature) for s in video_streams()))


VIDEO_FEATURE_CHOICES: tuple[str, ...] = tuple(s.video_feature for s in video_streams() if s.video_feature)
# rows per second of each video stream, by training.video_features choice (what clip cutting needs)
VIDEO_FEATURE_RATES: dict[str, float] = {s.video_feature: float(s.rate) for s in video_streams()
                                         if s.video_feature and s.rate}


def read_streams(modalities: Iterable[str], video_features: Sequence[str]) -> list[str]:
    """The streams a reader of ``modalities`` needs: text and audio by modality, the video streams
    that ``video_features`` selects."""
    modalities = set(modalities)
    selected = {by_video_feature(choice).name for choice in video_features}
    return [s.name for s in STREAMS if s.trained and s.modality in modalities
            and (s.modality != "video" or s.name in selected)]


def stream_dim(s: FeatureStream, config: Mapping[str, Any]) -> int:
    """The stream's feature dimension under ``config`` (a fixed number, or the config key it names)."""
    if isinstance(s.dim, int):
        return s.dim
    node: Any = config
    for key in s.dim.split("."):
        node = node[key]
    return int(node)


def video_by_choice(shards: Mapping[str, Sequence], video_features: Sequence[str]) -> dict[str, list[str]]:
    """``{stream name: shards}`` -> ``{video_features choice: shards}`` of the selected video streams."""
    return {choice: [str(p) for p in shards.get(by_video_feature(choice).name, ())] for choice in video_features}


def streams_markdown() -> str:
    """The table of :data:`STREAMS` as docs/feature_streams.md shows it."""
    lines = ["| stream | modality | made by | extractor | dim | rows/s (attribute) | ledger length | "
             "read by MCN | when made | media.decode cuda |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in STREAMS:
        rate = "one per caption" if s.rate is None else f"{s.rate:g} (`{s.rate_attr}` = {s.rate_attr_value:g})"
        read = (f"video_features `{s.video_feature}`" if s.video_feature else s.modality) if s.trained else "no"
        made = "every feature corpus" if s.always else "when an experiment reads it"
        lines.append(f"| `{s.name}` | {s.modality} | `mcnflow {'media' if s.producer == MEDIA else 'extract text'}` "
                     f"| `{s.extractor}` | {s.dim if isinstance(s.dim, int) else f'`{s.dim}`'} | {rate} "
                     f"| {s.length_unit} | {read} | {made} | {s.cuda_decode if s.producer == MEDIA else '-'} |")
    return "\n".join(lines) + "\n"
