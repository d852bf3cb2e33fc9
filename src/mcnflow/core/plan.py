"""The one place that turns the merged config into what each stage and each rule needs.

``Plan(config)`` answers, for a validated config: each stage's settings (``plan.settings(stage,
**names)``), each experiment's merged settings, each benchmark's evaluation settings, each corpus's
input files, the corpora whose features are needed and the demo's files. The Snakemake workflow
(``workflow/rules/common.smk``) and every CLI's ``--config`` path call the same functions, so a job
the workflow runs and the same stage run by hand get identical settings.

A stage's settings are also its rerun trigger: the workflow hands them to the job as a
content-addressed JSON file (:func:`settings_file`), so the command line stays short, the file name
changes exactly when the settings do, and YAML key order changes nothing (sorted-key JSON).
``--settings`` / ``--settings-file`` JSON is validated against the stage's part of the schema
(:func:`stage_schema`), so a hand-written settings file fails with the key and the allowed values.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import jsonschema

from mcnflow.core.config import (ConfigError, canonical_json, deep_merge, deref, describe_error, fill_defaults,
                                 load_schema)
from mcnflow.core.frozen import FrozenSettings, freeze
from mcnflow.core.streams import MEDIA, STREAMS, media_streams, read_streams

PAIR_LETTERS = {"t": "text", "v": "video", "a": "audio"}
MODALITIES = ("video", "audio", "text")

# The corpus file that lists a reader's videos (the manifest is read from it).
ID_SOURCE_KEY = {
    "howto100m": "videos_csv",
    "youcook2": "annotations",
    "msrvtt": "csv",
    "crosstask": "videos",
    "mining_youtube": "videos",
}
CROSSTASK_FILES = ("videos", "steps", "annotations")
MINING_YOUTUBE_FILES = ("videos", "annotations")
# The corpus reader each step-localization task evaluates.
STEP_TASK_READERS = {"crosstask": "crosstask", "mining_youtube": "mining_youtube"}
# Tasks whose benchmark leaves out the train corpus's videos unless exclude_videos_of says otherwise
# (MCN's YouCook2 protocol); step localization evaluates every test video, as MCN.
EXCLUDE_TRAIN_VIDEOS_BY_DEFAULT = ("retrieval", "localization")

# Caption formats whose captions are the corpus's caption file (HowTo100M's caption.json /
# raw_caption.json), split once per shard by `mcnflow split-captions`; vtt captions are yt-dlp's files.
CAPTION_FILE_FORMATS = ("caption_json", "raw_caption_json")

# Files `mcnflow demo-corpus` writes, relative to demo.corpus_dir.
DEMO_CORPUS_FILES = (
    "howto100m/HowTo100M_v1.csv",
    "howto100m/caption.json",
    "youcook2/youcookii_annotations_trainval.json",
    "msrvtt/MSRVTT_JSFUSION_test.csv",
    "crosstask/videos.csv",
    "crosstask/tasks_primary.txt",
    "mining_youtube/videos_test.txt",
)

# Where the workflow writes the settings files it hands to jobs.
SETTINGS_DIR = Path(".snakemake") / "mcnflow-settings"


def splits_captions(spec: Mapping[str, Any]) -> bool:
    """Whether a corpus's captions are read per shard from its split caption file (HowTo100M's
    caption.json / raw_caption.json; not VTT auto-captions, not the annotation corpora)."""
    return spec.get("reader") == "howto100m" and spec.get("caption_format", "caption_json") in CAPTION_FILE_FORMATS


def experiment_modalities(pairs) -> list[str]:
    """The modalities a set of pairs trains, e.g. [tv] -> [text, video]."""
    return sorted({PAIR_LETTERS[letter] for pair in pairs for letter in pair})


class Plan:
    """Everything the rules and the stage CLIs derive from one validated config."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.corpora: Mapping[str, Mapping] = config["corpora"]
        self.experiments: Mapping[str, Mapping] = config["experiments"]
        self.benchmarks: Mapping[str, Mapping] = config["evaluation"]["benchmarks"]
        self.train_corpus: str = config["train_corpus"]
        self.demo: Mapping | None = config.get("demo")

    # --- tables --------------------------------------------------------------------------------

    @property
    def feature_corpora(self) -> list[str]:
        """Corpora whose features are extracted: the training corpus and every benchmark's corpus."""
        return sorted({self.train_corpus} | {b["corpus"] for b in self.benchmarks.values()})

    def benchmark_corpus(self, benchmark: str) -> str:
        return self._benchmark(benchmark)["corpus"]

    def feature_sets(self, experiment: str, training: bool = True) -> list[str]:
        """The feature streams a branch reads (``results/features/<corpus>/<stream>/``, see
        mcnflow.core.streams): text, audio, and the video streams of ``training.video_features``.
        Training reads its modalities only; evaluation reads every modality a scoring may need."""
        modalities = self.training_modalities(experiment) if training else list(MODALITIES)
        choices = self.experiment_settings(experiment, self.seeds(experiment)[0])["training"]["video_features"]
        return sorted(read_streams(modalities, choices))

    def media_streams(self) -> list[str]:
        """The streams `mcnflow media` makes: those made for every corpus, and the optional ones
        (3D video) when an experiment reads them."""
        return list(self._media_streams)

    @functools.cached_property
    def _media_streams(self) -> tuple[str, ...]:
        # asked per media job when the workflow plans (1,220 shards): computed once per plan
        read = {name for experiment in self.experiments for name in self.feature_sets(experiment, training=False)}
        return tuple(s.name for s in media_streams() if s.always or s.name in read)

    def feature_streams(self) -> list[str]:
        """Every stream each feature corpus gets: the media streams and the text stream(s)."""
        made = set(self.media_streams())
        return [s.name for s in STREAMS if s.name in made or s.producer != MEDIA]

    def train_threads(self) -> int:
        """CPU threads of a training job: the loop plus its DataLoader workers."""
        return int(self.config["training"]["num_workers"]) + 1

    def media_threads(self) -> int:
        """CPU threads of a media job: the model thread plus the decoding workers (one ffmpeg each)."""
        return int(self.config["features"]["video"]["decode_workers"]) + 1

    def route_count(self) -> int:
        """Egress routes of the downloads (download.routes; none configured: the machine's own address)."""
        return len(self.config["download"]["routes"]) or 1

    def route_resource(self, shard: int | str) -> str:
        """The Snakemake resource of the route shard ``shard`` leaves by (the download CLI's rule: shard % routes)."""
        return f"route_{int(shard) % self.route_count()}"

    def route_limits(self) -> dict[str, int]:
        """Per route, how many download jobs may run at once: YouTube's per-IP limits apply per route."""
        return {f"route_{number}": int(self.config["download"]["jobs_per_route"])
                for number in range(self.route_count())}

    def training_modalities(self, experiment: str) -> list[str]:
        """What a training reads: its modalities, plus text, whose caption times define the clips."""
        return sorted(set(experiment_modalities(self._experiment(experiment)["pairs"])) | {"text"})

    def corpus_input_files(self, corpus: str) -> list[str]:
        """The corpus's own files (annotations / id lists) the manifest is read from (HowTo100M's
        caption.json is read by the caption split alone: :meth:`caption_file`)."""
        spec = self._corpus(corpus)
        keys = [ID_SOURCE_KEY[spec["reader"]]]
        if spec["reader"] == "crosstask":
            keys.append("steps")
        return [spec[key] for key in keys]

    def splits_captions(self, corpus: str) -> bool:
        """Whether the corpus's captions are split per shard (``mcnflow split-captions``) before text
        extraction: HowTo100M's caption.json / raw_caption_json, never VTT or an annotation corpus."""
        return splits_captions(self._corpus(corpus))

    @property
    def caption_split_corpora(self) -> list[str]:
        """The corpora whose features are extracted and whose captions are split per shard."""
        return [corpus for corpus in self.feature_corpora if self.splits_captions(corpus)]

    def caption_file(self, corpus: str) -> str:
        """The caption file the split streams (``corpora.<corpus>.captions``)."""
        if not self.splits_captions(corpus):
            raise ConfigError(f"corpus {corpus!r} has no caption file to split (reader "
                              f"{self._corpus(corpus)['reader']!r}, caption_format "
                              f"{self._corpus(corpus).get('caption_format', 'caption_json')!r})")
        return self._corpus(corpus)["captions"]

    def id_file(self, corpus: str) -> str:
        spec = self._corpus(corpus)
        return spec[ID_SOURCE_KEY[spec["reader"]]]

    def crosstask_files(self, corpus: str) -> dict[str, str]:
        spec = self._corpus(corpus)
        if spec["reader"] != "crosstask":
            raise ConfigError(f"a crosstask benchmark needs a corpus with reader crosstask, not {corpus!r} "
                              f"(reader {spec['reader']!r})")
        return {key: spec[key] for key in CROSSTASK_FILES}

    def demo_files(self) -> list[str]:
        if not self.demo:
            return []
        return [str(Path(self.demo["corpus_dir"]) / name) for name in DEMO_CORPUS_FILES]

    def word2vec_from_googlenews(self) -> bool:
        """The word2vec source is the GoogleNews binary (else: trained on the training corpus's captions)."""
        return self.config["features"]["text"]["word2vec"]["source"] == "googlenews"

    def shard_size(self) -> int:
        """Videos per shard: one job per shard of every per-video stage."""
        return int(self.config["shard_size"])

    def word2vec_inputs(self) -> list[str]:
        """Files the word2vec source is made from: the GoogleNews binary, or nothing beyond the
        training corpus's own stage outputs (the rule adds those)."""
        return [self.config["features"]["text"]["word2vec"]["path"]] if self.word2vec_from_googlenews() else []

    # --- stage settings ------------------------------------------------------------------------

    def settings(self, stage: str, **names: str) -> FrozenSettings:
        """The settings object of ``stage`` (see STAGES), e.g. ``settings("evaluate",
        experiment="tv", benchmark="youcook2_retrieval")``."""
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(sorted(STAGES))}")
        build, needed, _ = STAGES[stage]
        missing = [n for n in needed if names.get(n) in (None, "")]
        if missing:
            raise ConfigError(f"stage {stage!r} needs {', '.join('--' + n for n in missing)}")
        return freeze(build(self, **{n: names[n] for n in needed}))

    def seeds(self, experiment: str) -> list[int]:
        """The experiment's seeds: its own ``seeds`` or the study's."""
        return list(self._experiment(experiment).get("seeds") or self.config.get("seeds") or [1])

    def branches(self) -> list[tuple[str, int]]:
        """Every (experiment, seed): one training and one evaluation per benchmark each."""
        return [(name, seed) for name in self.experiments for seed in self.seeds(name)]

    def experiment_settings(self, name: str, seed: int | str) -> dict:
        """One branch's complete settings: the experiment's entry plus the training section it
        overrides, with ``training.seed`` the branch's seed."""
        seed = int(seed)
        if seed not in self.seeds(name):
            raise ConfigError(f"seed {seed} is not a seed of experiment {name!r}; its seeds: {self.seeds(name)}")
        entry = copy.deepcopy(dict(self._experiment(name)))
        entry.pop("seeds", None)
        entry["training"] = deep_merge(self.config["training"], entry.get("training") or {})
        entry["training"]["seed"] = seed
        return entry

    def _download(self) -> dict:
        return copy.deepcopy(self.config["download"])

    def _normalize(self) -> dict:
        # sample_fps: the 2D sampler the kept videos' keyframes are aligned to (normalize.align_keyframes)
        return {**copy.deepcopy(self.config["normalize"]), "sample_fps": self.config["features"]["video"]["fps"]}

    def _media(self) -> dict:
        """One decode per video (mcnflow media): the normalization and, per stream it makes
        (:meth:`media_streams`), that stream's ``features.<name>`` section."""
        media = copy.deepcopy(self.config.get("media") or {})
        settings = {"normalize": self._normalize(), "media": media}
        for name in self.media_streams():
            settings[name] = self._features(name)
        return settings

    def _features(self, modality: str) -> dict:
        return {**copy.deepcopy(self.config["features"][modality]),
                "compression": self.config["features"]["compression"]}

    def _manifest(self, corpus: str) -> dict:
        return {"corpus": corpus, "spec": copy.deepcopy(self._corpus(corpus)),
                "shard_size": self.config["shard_size"]}

    def _text(self, corpus: str) -> dict:
        text = self.config["features"]["text"]
        return {"corpus": corpus, "spec": copy.deepcopy(self._corpus(corpus)), "max_words": text["max_words"],
                "compression": self.config["features"]["compression"]}

    def _split_captions(self, corpus: str) -> dict:
        self.caption_file(corpus)  # the corpus must have a caption file to split
        return {"corpus": corpus, "spec": copy.deepcopy(self._corpus(corpus)),
                "buffer_mb": self.config["features"]["text"]["split_buffer_mb"]}

    def _word2vec(self) -> dict:
        return {"word2vec": copy.deepcopy(self.config["features"]["text"]["word2vec"]),
                "corpus": self.train_corpus, "spec": copy.deepcopy(self._corpus(self.train_corpus))}

    def _train(self, experiment: str, seed: str) -> dict:
        return self.experiment_settings(experiment, seed)

    def _evaluate(self, experiment: str, seed: str, benchmark: str) -> dict:
        bench = self._benchmark(benchmark)
        evaluation = self.config["evaluation"]
        corpus = bench["corpus"]
        if bench["task"] in STEP_TASK_READERS:
            self.step_localization_files(benchmark)  # the corpus's reader must be the task's
        return {
            "benchmark": benchmark,
            "task": bench["task"],
            "corpus": corpus,
            "spec": copy.deepcopy(self._corpus(corpus)),
            "tie_policy": evaluation["tie_policy"],
            "batch_size": evaluation["batch_size"],
            # a benchmark's own audio_frames (MCN: MSR-VTT 3072) overrides evaluation.audio_frames
            "audio_frames": bench.get("audio_frames") or evaluation["audio_frames"],
            "convention": bench.get("convention", "present"),
            "exclude": self._exclusion(benchmark),
            "localization": copy.deepcopy(evaluation["localization"]),
            "crosstask": copy.deepcopy(evaluation.get("crosstask") or {}),
            "experiment": self.experiment_settings(experiment, seed),
        }

    def excluded_corpus(self, benchmark: str) -> str | None:
        """The corpus whose video ids benchmark ``benchmark`` leaves out (``exclude_videos_of``;
        absent: the train corpus for retrieval and localization, as MCN's YouCook2; null: none)."""
        bench = self._benchmark(benchmark)
        if "exclude_videos_of" in bench:
            name = bench["exclude_videos_of"]
        else:
            name = self.train_corpus if bench["task"] in EXCLUDE_TRAIN_VIDEOS_BY_DEFAULT else None
        if name is not None and name not in self.corpora:
            raise ConfigError(f"config key 'evaluation.benchmarks.{benchmark}.exclude_videos_of': {name!r} is not "
                              "a corpus; allowed values: " + ", ".join(map(repr, sorted(self.corpora))) + ", null")
        return name

    def excluded_id_file(self, benchmark: str) -> str | None:
        """The id file of :meth:`excluded_corpus` (an input of the benchmark's evaluation jobs)."""
        name = self.excluded_corpus(benchmark)
        return self.id_file(name) if name is not None else None

    def _exclusion(self, benchmark: str) -> dict | None:
        name = self.excluded_corpus(benchmark)
        if name is None:
            return None
        spec = copy.deepcopy(dict(self._corpus(name)))
        spec["limit"] = None  # the whole corpus's list: MCN leaves out every video of HowTo100M
        return {"corpus": name, "spec": spec}

    def step_localization_files(self, benchmark: str) -> dict[str, str]:
        """The corpus files a crosstask / mining_youtube benchmark reads (its reader must match the task)."""
        bench = self._benchmark(benchmark)
        task, corpus = bench["task"], bench["corpus"]
        reader = self._corpus(corpus)["reader"]
        if reader != STEP_TASK_READERS[task]:
            raise ConfigError(f"config key 'evaluation.benchmarks.{benchmark}.corpus': a {task} benchmark needs a "
                              f"corpus with reader {STEP_TASK_READERS[task]}, not {corpus!r} (reader {reader!r})")
        if task == "crosstask":
            return self.crosstask_files(corpus)
        return {key: self._corpus(corpus)[key] for key in MINING_YOUTUBE_FILES}

    def _summarize(self) -> dict:
        return {"statistics": copy.deepcopy(dict(self.config.get("statistics") or {})),
                "benchmarks": {name: {"task": bench["task"], "corpus": bench["corpus"],
                                      "reader": self._corpus(bench["corpus"])["reader"]}
                               for name, bench in self.benchmarks.items()},
                # what each experiment trains: pair effects contrast experiments equal in all but one pair
                "experiments": {name: {key: copy.deepcopy(value) for key, value in entry.items() if key != "seeds"}
                                for name, entry in self.experiments.items()}}

    def _demo(self) -> dict:
        if not self.demo:
            raise ConfigError("config key 'demo': the config has no demo section (use demo/config.yaml)")
        return copy.deepcopy(self.demo)

    # --- lookups with errors that name the key ----------------------------------------------------

    def _corpus(self, name: str) -> Mapping:
        if name not in self.corpora:
            raise ConfigError(f"corpus {name!r} is not in config key 'corpora'; allowed values: "
                              + ", ".join(map(repr, sorted(self.corpora))))
        return self.corpora[name]

    def _experiment(self, name: str) -> Mapping:
        if name not in self.experiments:
            raise ConfigError(f"experiment {name!r} is not in config key 'experiments'; allowed values: "
                              + ", ".join(map(repr, sorted(self.experiments))))
        return self.experiments[name]

    def _benchmark(self, name: str) -> Mapping:
        if name not in self.benchmarks:
            raise ConfigError(f"benchmark {name!r} is not in config key 'evaluation.benchmarks'; allowed values: "
                              + ", ".join(map(repr, sorted(self.benchmarks))))
        return self.benchmarks[name]


# --- the stage table: builder, the names it needs, and its schema ----------------------------------

def _ref(*path: str) -> dict:
    """A $ref into the config schema (kept under $defs/config of each stage schema)."""
    return {"$ref": "#/$defs/config/" + "/".join(path)}


_CORPUS_SCHEMA = {"$ref": "#/$defs/corpus"}


def _flat(*section: str, extra: Mapping[str, dict] | None = None) -> Callable[[dict], dict]:
    """A stage whose settings are one config section (plus a few keys from elsewhere)."""
    def schema(root: dict) -> dict:
        node = root
        for key in section:
            node = node["properties"][key]
        node = copy.deepcopy(node)
        node.setdefault("properties", {}).update(copy.deepcopy(dict(extra or {})))
        node["required"] = sorted(set(node.get("required", [])) | set(extra or {}))
        return node
    return schema


def _object(properties: Mapping[str, dict], required=None) -> Callable[[dict], dict]:
    def schema(root: dict) -> dict:
        return {"type": "object", "additionalProperties": False, "properties": copy.deepcopy(dict(properties)),
                "required": sorted(required if required is not None else properties)}
    return schema


def _experiment_schema(root: dict) -> dict:
    node = copy.deepcopy(root["properties"]["experiments"]["additionalProperties"])
    node["properties"].pop("seeds", None)  # a branch has one seed: training.seed
    node["properties"]["training"] = _ref("properties", "training")
    node["required"] = sorted(set(node.get("required", [])) | {"training"})
    return node


_COMPRESSION = _ref("properties", "features", "properties", "compression")


def _media_schema(root: dict) -> dict:
    """normalize, media, and one ``features.<name>`` section per media stream (mcnflow.core.streams)."""
    properties = {
        "normalize": _flat("normalize", extra={"sample_fps": _ref(
            "properties", "features", "properties", "video", "properties", "fps")})(root),
        "media": _ref("properties", "media"),
    }
    for s in media_streams():
        section = _flat("features", s.section, extra={"compression": _COMPRESSION})(root)
        # an optional stream is present only when an experiment reads it: no default may fill it in
        properties[s.name] = section if s.always else {k: v for k, v in section.items() if k != "default"}
    required = ["normalize", "media", *(s.name for s in media_streams() if s.always)]
    return _object(properties, required=required)(root)
_EVALUATION = ("properties", "evaluation", "properties")

STAGES: dict[str, tuple[Callable[..., dict], tuple[str, ...], Callable[[dict], dict]]] = {
    "manifest": (Plan._manifest, ("corpus",), _object(
        {"corpus": {"type": "string"}, "spec": _CORPUS_SCHEMA, "shard_size": _ref("properties", "shard_size")})),
    "download": (Plan._download, (), _flat("download")),
    "media": (Plan._media, (), _media_schema),
    "features.text": (Plan._text, ("corpus",), _object(
        {"corpus": {"type": "string"}, "spec": _CORPUS_SCHEMA,
         "max_words": _ref("properties", "features", "properties", "text", "properties", "max_words"),
         "compression": _COMPRESSION})),
    "split_captions": (Plan._split_captions, ("corpus",), _object(
        {"corpus": {"type": "string"}, "spec": _CORPUS_SCHEMA,
         "buffer_mb": _ref("properties", "features", "properties", "text", "properties", "split_buffer_mb")})),
    "word2vec": (Plan._word2vec, (), _object(
        {"word2vec": _ref("properties", "features", "properties", "text", "properties", "word2vec"),
         "corpus": {"type": "string"}, "spec": _CORPUS_SCHEMA})),
    "train": (Plan._train, ("experiment", "seed"), _experiment_schema),
    "evaluate": (Plan._evaluate, ("experiment", "seed", "benchmark"), lambda root: _object({
        "benchmark": {"type": "string"},
        "task": _ref(*_EVALUATION, "benchmarks", "additionalProperties", "properties", "task"),
        "corpus": {"type": "string"},
        "spec": _CORPUS_SCHEMA,
        "tie_policy": _ref(*_EVALUATION, "tie_policy"),
        "batch_size": _ref(*_EVALUATION, "batch_size"),
        "audio_frames": _ref(*_EVALUATION, "audio_frames"),
        "convention": _ref(*_EVALUATION, "benchmarks", "additionalProperties", "properties", "convention"),
        "exclude": {"type": ["object", "null"], "additionalProperties": False,
                    "description": "the corpus whose video ids the benchmark leaves out (null: none)",
                    "properties": {"corpus": {"type": "string"}, "spec": _CORPUS_SCHEMA},
                    "required": ["corpus", "spec"]},
        "localization": _ref(*_EVALUATION, "localization"),
        "crosstask": _ref(*_EVALUATION, "crosstask"),
        "experiment": _experiment_schema(root),
    })(root)),
    "summarize": (Plan._summarize, (), _object({
        "statistics": _ref("properties", "statistics"),
        "benchmarks": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": False, "required": ["task", "corpus", "reader"],
            "properties": {"task": {"type": "string"}, "corpus": {"type": "string"},
                           "reader": _ref("$defs", "corpus", "properties", "reader")}}},
        "experiments": _ref("properties", "experiments"),
    }, required=["statistics", "benchmarks"])),
    "demo": (Plan._demo, (), lambda root: {**copy.deepcopy(root["properties"]["demo"]), "type": "object"}),
}


def stage_schema(stage: str) -> dict:
    """The JSON schema of one stage's settings, built from the config schema."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(sorted(STAGES))}")
    root = load_schema()
    schema = STAGES[stage][2](root)
    schema["$defs"] = {**copy.deepcopy(root.get("$defs", {})), "config": root}
    return schema


def validate_stage_settings(stage: str, settings: Any, origin: str = "--settings") -> FrozenSettings:
    """Check hand-given settings JSON against the stage's schema (filling defaults); errors name the key."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"{origin}: the settings of stage {stage!r} must be a JSON object")
    schema = stage_schema(stage)
    settings = json.loads(canonical_json(settings))  # plain JSON types (frozen tuples are arrays)
    fill_defaults(settings, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(settings), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        # Keys of a stage that is one config section are named as in the config (features.video.device).
        prefix = f"{stage}." if stage == "download" else ""
        messages = [describe_error(e).replace("config key '<top level>'", f"settings key '{prefix.rstrip('.') or '<top level>'}'", 1)
                    .replace("config key '", f"settings key '{prefix}", 1) for e in errors[:10]]
        raise ConfigError(f"{origin}: invalid settings for stage {stage!r}:\n  " + "\n  ".join(messages))
    return freeze(settings)


# Schema keyword of keys that change how fast a stage runs, never what it computes (batch sizes of
# inference, workers, devices, thread counts, sleeps): config reference in docs/settings.md.
OPERATIONAL = "x-operational"


def _is_operational(node: Mapping | None, schema: Mapping) -> bool:
    """The node, or any node its ``$ref`` chain passes through, is marked operational."""
    return bool(node) and bool(deref(node, schema).get(OPERATIONAL))


def _without_operational(value: Any, node: Mapping | None, schema: Mapping) -> Any:
    if node is None or not isinstance(value, Mapping):
        return value
    node = deref(node, schema)
    properties = node.get("properties", {})
    extra = node.get("additionalProperties")
    kept = {}
    for key, item in value.items():
        child = properties.get(key, extra if isinstance(extra, Mapping) else None)
        if not _is_operational(child, schema):
            kept[key] = _without_operational(item, child, schema)
    return kept


@functools.lru_cache(maxsize=None)
def _cached_stage_schema(stage: str) -> dict:
    return stage_schema(stage)  # read-only below: planning 1,220 shards must not re-read the schema per job


def result_settings(stage: str, settings: Mapping) -> dict:
    """``settings`` without the operational keys: what decides whether a stage's outputs are still valid."""
    schema = _cached_stage_schema(stage)
    return _without_operational(json.loads(canonical_json(settings)), schema, schema)


@functools.lru_cache(maxsize=4096)
def _digest(stage: str, text: str) -> str:
    return hashlib.sha256(canonical_json(result_settings(stage, json.loads(text))).encode("utf-8")).hexdigest()


def settings_digest(stage: str, settings: Mapping) -> str:
    """The hash of a stage's result settings: equal when only operational keys differ."""
    return _digest(stage, canonical_json(settings))


def settings_file(stage: str, settings: Mapping, directory: str | Path = SETTINGS_DIR) -> str:
    """Write ``settings`` to ``<directory>/<stage>.<sha256 of the result settings>.json`` and return that path.

    The name changes exactly when a result setting does: as a Snakemake param it reruns a job when
    its results can change, and not when only an operational key (a batch size, a worker count, a
    device) did. The file holds every setting, operational ones included, and is rewritten in place
    when they change, so the next job that runs reads them.
    """
    text = canonical_json(settings)
    path = Path(directory) / f"{stage}.{settings_digest(stage, settings)}.json"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}.{id(text)}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return str(path)
