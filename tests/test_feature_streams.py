"""The table of feature streams (mcnflow.core.streams) is what every stage reads.

The table agrees with the config schema and the published config; the planning, the media stage's
outputs and flags, the feature statistics and the training / evaluation flags all follow it; and a
stream added to the table alone (with its extractor) is made, ledgered and counted by the media stage
with no other change.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib

import numpy as np
import pytest

from mcnflow.core import streams
from mcnflow.core.config import ConfigError, load_config, load_schema
from mcnflow.core.ledger import read_ledger
from mcnflow.core.media_probe import MediaInfo
from mcnflow.core.plan import Plan
from mcnflow.core.status import FeatureStatus
from mcnflow.core.streams import STREAMS, by_video_feature, media_streams, read_streams, stream, stream_dim
from mcnflow.features.store import ShardReader
from mcnflow.media.consumers import Consumer, ConsumerSkip, consumer_class
from mcnflow.media.decode import AudioTap

from test_normalize import download_ledger, inputs  # noqa: F401 - inputs is a fixture


@pytest.fixture(scope="module")
def config(repo_root):
    return load_config([repo_root / "config.yaml"])


# --- the table against the schema, the published config and the extractors ----------------------

def test_every_stream_has_its_settings_section_and_a_known_modality():
    schema = load_schema()["properties"]["features"]["properties"]
    assert len({s.name for s in STREAMS}) == len(STREAMS)
    for s in STREAMS:
        assert s.section in schema, f"features.{s.section} is not in the config schema"
        assert s.modality in ("video", "audio", "text") and s.producer in (streams.MEDIA, streams.TEXT)


def test_the_video_feature_choices_are_the_schemas():
    items = load_schema()["properties"]["training"]["properties"]["video_features"]["items"]
    assert tuple(items["enum"]) == streams.VIDEO_FEATURE_CHOICES == ("2d", "3d")
    assert by_video_feature("3d").name == "video3d"
    with pytest.raises(ConfigError, match=r"training.video_features': '4d' is not allowed; allowed values: '2d', '3d'"):
        by_video_feature("4d")


def test_every_extractor_resolves(config):
    for s in media_streams():
        assert issubclass(consumer_class(s), Consumer)
    for s in STREAMS:
        if s.producer == streams.TEXT:
            importlib.import_module(s.extractor)
    broken = dataclasses.replace(stream("audio"), extractor="mcnflow.core.streams:STREAMS")
    with pytest.raises(TypeError, match="not a media Consumer"):
        consumer_class(broken)


def test_the_declared_rates_and_dims_are_the_published_configs(config):
    features = config["features"]
    assert stream("video").rate_attr_value == features["video"]["fps"] == stream("video").rate
    assert stream("video3d").rate == features["video3d"]["fps"] / features["video3d"]["clip_frames"]
    assert stream("audio").rate_attr_value == features["audio"]["hop_ms"]
    assert stream("audio").rate == 1000.0 / features["audio"]["hop_ms"]
    assert stream_dim(stream("audio"), config) == 40 and stream_dim(stream("text"), config) == 300
    # MCN's video input: 2048 per stream of training.video_features
    chosen = [by_video_feature(c) for c in config["training"]["video_features"]]
    assert sum(stream_dim(s, config) for s in chosen) == config["training"]["video_dim"]


def test_an_unknown_stream_is_named():
    with pytest.raises(ConfigError, match=r"unknown feature stream 'depth'; streams: video, video3d, audio, text"):
        stream("depth")


# --- planning and the readers follow the table ---------------------------------------------------

def test_plan_makes_and_reads_the_streams_the_experiments_select(repo_root):
    both = Plan(load_config([repo_root / "config.yaml"]))
    assert both.media_streams() == ["video", "video3d", "audio"]
    assert both.feature_streams() == ["video", "video3d", "audio", "text"]
    assert set(both.settings("media")) == {"normalize", "media", "video", "video3d", "audio"}
    only_2d = Plan(load_config([repo_root / "config.yaml"], {"training": {"video_features": ["2d"],
                                                                            "video_dim": 2048}}))
    assert only_2d.media_streams() == ["video", "audio"] and "video3d" not in only_2d.settings("media")
    assert only_2d.feature_streams() == ["video", "audio", "text"]
    assert read_streams(["video", "text"], ["3d"]) == ["video3d", "text"]
    assert read_streams(["audio", "text"], ["2d", "3d"]) == ["audio", "text"]


@pytest.mark.parametrize("module", ["mcnflow.training.cli", "mcnflow.evaluation.cli"])
def test_training_and_evaluation_take_one_shard_flag_per_stream(module):
    parser = argparse.ArgumentParser()
    importlib.import_module(module).configure_parser(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    assert {f"--{s.name}" for s in STREAMS} <= flags


def test_the_media_stage_takes_an_output_and_a_ledger_per_media_stream():
    from mcnflow.media.stage import configure_parser

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    for s in media_streams():
        assert {f"--{s.name}-output", f"--{s.name}-ledger"} <= flags
    assert "--text-output" not in flags  # text is the text stage's


# --- a new stream: one table entry and its extractor ----------------------------------------------

class AudioRms(Consumer):
    """A toy extractor: the RMS energy of each 10 ms of audio, one row of (1, frames)."""

    HOP = 160

    def tap(self) -> AudioTap:
        return AudioTap(self.name, 16000)

    def skip(self, info: MediaInfo) -> ConsumerSkip | None:
        return None if info.has_audio else ConsumerSkip(FeatureStatus.NO_AUDIO, "the video has no audio stream")

    def prepare(self, data: np.ndarray):
        frames = data[: len(data) // self.HOP * self.HOP].reshape(-1, self.HOP)
        return np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)).astype(np.float16)[None, :]

    def root_attrs(self) -> dict:
        return {"hop_ms": 10.0, "extractor": "rms"}

    def accept(self, video, prepared, done) -> None:
        done(video.video_id, prepared, {"duration": prepared.shape[1] / 100.0})


RMS = streams.FeatureStream(
    name="rms", modality="audio", producer=streams.MEDIA, extractor=f"{__name__}:AudioRms", dim=1, rate=100.0,
    rate_attr="hop_ms", rate_attr_value=10.0, time_axis=1, length_unit="10 ms frames",
    description="RMS energy per 10 ms (a test stream: made and counted, not read by MCN)", trained=False)


def test_a_stream_added_to_the_table_is_made_ledgered_and_counted(inputs, tmp_path, monkeypatch):  # noqa: F811
    from mcnflow.features.stats import feature_stats
    from mcnflow.media.stage import Outputs, configure_parser, media_shard

    from test_media import stage_settings

    settings = stage_settings(keep=False)
    monkeypatch.setattr(streams, "STREAMS", (*STREAMS, RMS))
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert "--rms-output" in {o for action in parser._actions for o in action.option_strings}
    settings["rms"] = {"compression": settings["video"]["compression"]}
    downloads = download_ledger(tmp_path / "download.tsv", [("vid_wide", "ok", inputs["wide"]),
                                                            ("vid_silent", "ok", inputs["silent"])])
    features = {name: (tmp_path / name / "shard-00000.h5", tmp_path / name / "shard-00000.tsv")
                for name in ("video", "audio", "rms")}
    rows = media_shard(downloads, "demo", 0, Outputs(tmp_path / "normalize.tsv", None, features), settings,
                       progress=False)

    assert [(r["video_id"], r["status"]) for r in rows["rms"]] == [("vid_wide", "ok"), ("vid_silent", "no_audio")]
    reader = ShardReader(tmp_path / "rms" / "shard-00000.h5")
    try:
        energy = reader.read("vid_wide")
        assert reader.attrs["modality"] == "audio" and reader.attrs["extractor"] == "rms"
    finally:
        reader.close()
    # 2 s of a tone (AAC adds a few ms): about 200 frames of 10 ms; the ledger's length is counted
    # along the declared time axis
    assert energy.shape[0] == 1 and 195 <= energy.shape[1] <= 205, energy.shape
    assert float(energy.astype(np.float32).mean()) > 0.01
    assert read_ledger(tmp_path / "rms" / "shard-00000.tsv")[0]["length"] == str(energy.shape[1])
    counted = {(r["modality"], r["status"]): r["videos"] for r in feature_stats(
        "demo", [str(features[name][1]) for name in ("video", "audio", "rms")])}
    assert counted["rms", "ok"] == 1 and counted["rms", "no_audio"] == 1 and counted["audio", "ok"] == 1


def test_docs_mirror_the_table(repo_root):
    text = (repo_root / "docs" / "feature_streams.md").read_text(encoding="utf-8")
    assert streams.streams_markdown() in text, "docs/feature_streams.md is out of date: paste streams_markdown() into it"
