# Validation, the corpus/shard/experiment tables and the small input functions the rules call.
import atexit
import json
import os
import subprocess
import sys
from pathlib import Path

from mcnflow.core.config import canonical_json, deep_merge, validate_config
from mcnflow.corpora import open_corpus
from mcnflow.demo.corpus import planned_video_ids
from mcnflow.core.shards import shard_names

validate_config(config)

# Rules run `python -m mcnflow` from this checkout's src/ (jobs inherit the environment), so a conda
# env (envs/) needs only third-party packages and a venv with mcnflow installed works the same.
os.environ.update(PYTHONPATH=str(Path(workflow.basedir) / "src"))

CORPORA = config["corpora"]
EXPERIMENTS = config["experiments"]
BENCHMARKS = config["evaluation"]["benchmarks"]
DEMO = config.get("demo")
TRAIN_CORPUS = config["train_corpus"]
# Corpora whose features are needed: the training corpus and every benchmark's corpus.
FEATURE_CORPORA = sorted({TRAIN_CORPUS} | {b["corpus"] for b in BENCHMARKS.values()})
MODALITIES = ["video", "audio", "text"]

ID_SOURCE_KEY = {
    "howto100m": "videos_csv",
    "youcook2": "annotations",
    "msrvtt": "csv",
    "crosstask": "videos",
}


def corpus_input_files(corpus):
    """The corpus's own files (annotations / id lists / captions) that the manifest is read from."""
    spec = CORPORA[corpus]
    keys = [ID_SOURCE_KEY[spec["reader"]]]
    if spec["reader"] == "howto100m" and spec.get("caption_format") != "vtt":
        keys.append("captions")
    if spec["reader"] == "crosstask":
        keys.append("steps")
    return [spec[k] for k in keys]


def count_videos(corpus):
    """Videos in a corpus, read cheaply at planning time (the demo's come from its settings)."""
    spec = CORPORA[corpus]
    id_file = spec[ID_SOURCE_KEY[spec["reader"]]]
    if not Path(id_file).exists() and DEMO and corpus in planned_video_ids(DEMO):
        ids = planned_video_ids(DEMO)[corpus]
        return len(ids[: spec["limit"]] if spec.get("limit") else ids)
    if not Path(id_file).exists():
        # Plan one shard so dry runs and --lint work; running stops at the manifest rule's missing input.
        logger.warning(
            f"corpora.{corpus}.{ID_SOURCE_KEY[spec['reader']]}: file not found: {id_file} "
            "(planned as one shard; the manifest rule needs it)"
        )
        return 0
    return len(open_corpus(corpus, spec).video_ids())


SHARDS = {
    corpus: shard_names(count_videos(corpus), config["shard_size"])
    for corpus in CORPORA
}


wildcard_constraints:
    corpus="|".join(CORPORA),
    shard=r"\d{5}",
    modality="video|audio|text",
    experiment="|".join(EXPERIMENTS),
    benchmark="|".join(BENCHMARKS),


def shard_files(pattern):
    """Input function: ``pattern`` expanded over every shard of the job's corpus."""

    def files(wildcards):
        return expand(pattern, corpus=wildcards.corpus, shard=SHARDS[wildcards.corpus])

    return files


def corpus_shard_files(pattern, corpus, **kwargs):
    return expand(pattern, corpus=corpus, shard=SHARDS[corpus], **kwargs)


# --- settings as params: sorted-key JSON, so YAML key order never reruns anything ---------------


def corpus_spec(wildcards):
    return canonical_json(CORPORA[wildcards.corpus])


# Params are functions so Snakemake does not read the braces of JSON (e.g. "{video_id}") as wildcards.


def section(*keys):
    node = config
    for key in keys:
        node = node[key]
    value = canonical_json(node)
    return lambda wildcards: value


def feature_settings(modality):
    """features.<modality> plus the shared compression choice."""
    value = canonical_json(
        {
            **config["features"][modality],
            "compression": config["features"]["compression"],
        }
    )
    return lambda wildcards: value


def crosstask_files(corpus):
    spec = CORPORA[corpus]
    if spec["reader"] != "crosstask":
        raise WorkflowError(
            f"a crosstask benchmark needs a corpus with reader crosstask, not {corpus!r}"
        )
    return {key: spec[key] for key in ("videos", "steps", "annotations")}


def experiment_settings(name):
    """One experiment's complete settings: its entry plus the training section it overrides."""
    entry = dict(EXPERIMENTS[name])
    entry["training"] = deep_merge(config["training"], entry.get("training") or {})
    return entry


def experiment_params(wildcards):
    return canonical_json(experiment_settings(wildcards.experiment))


def evaluation_params(wildcards):
    bench = BENCHMARKS[wildcards.benchmark]
    return canonical_json(
        {
            "task": bench["task"],
            "tie_policy": config["evaluation"]["tie_policy"],
            "batch_size": config["evaluation"]["batch_size"],
            "audio_frames": config["evaluation"]["audio_frames"],
            "localization": config["evaluation"]["localization"],
            "crosstask": (
                crosstask_files(bench["corpus"])
                if bench["task"] == "crosstask"
                else None
            ),
            "experiment": experiment_settings(wildcards.experiment),
        }
    )


PAIR_LETTERS = {"t": "text", "v": "video", "a": "audio"}


def experiment_modalities(name):
    """The modalities an experiment trains (and so reads): those of its pairs, e.g. tv -> text, video."""
    return sorted(
        {PAIR_LETTERS[letter] for pair in EXPERIMENTS[name]["pairs"] for letter in pair}
    )


def feature_files(corpus, modalities):
    return {
        m: corpus_shard_files(
            "results/features/{corpus}/{modality}/shard-{shard}.h5", corpus, modality=m
        )
        for m in modalities
    }


# --- targets ---------------------------------------------------------------------------------


def all_targets():
    return [
        *expand("results/download/{corpus}/survival.tsv", corpus=CORPORA),
        *expand("results/features/{corpus}/stats.tsv", corpus=FEATURE_CORPORA),
        *expand("results/train/{experiment}/model.pt", experiment=EXPERIMENTS),
        *expand(
            "results/eval/{experiment}/{benchmark}.json",
            experiment=EXPERIMENTS,
            benchmark=BENCHMARKS,
        ),
        "results/summary.csv",
    ]


# --- input functions of the rule files ------------------------------------------------------


def evaluation_inputs(wildcards):
    corpus = BENCHMARKS[wildcards.benchmark]["corpus"]
    files = feature_files(corpus, MODALITIES)
    files["checkpoint"] = f"results/train/{wildcards.experiment}/model.pt"
    files["manifest"] = f"results/manifest/{corpus}.tsv"
    files["vocabulary"] = "results/features/vocabulary.h5"
    return files


def manifest_inputs(wildcards):
    files = corpus_input_files(wildcards.corpus)
    if DEMO:
        demo_outputs = [f.format(dir=DEMO["corpus_dir"]) for f in DEMO_CORPUS_FILES]
        return [f for f in files if f in demo_outputs] + [
            f for f in files if f not in demo_outputs
        ]
    return files


def normalized_videos(path):
    # normalize.keep: false makes the normalized copies temporary (removed once features exist).
    return path if config["normalize"]["keep"] else temp(path)


def training_feature_modalities(name):
    """What a training reads: its modalities, plus text, whose caption times define the clips."""
    return sorted(set(experiment_modalities(name)) | {"text"})


def training_inputs(wildcards):
    files = feature_files(
        TRAIN_CORPUS, training_feature_modalities(wildcards.experiment)
    )
    files["vocabulary"] = "results/features/vocabulary.h5"
    return files


def feature_args(inputs, modalities):
    return " ".join(f"--{m} " + " ".join(inputs[m]) for m in modalities)


# --- demo mode --------------------------------------------------------------------------------

DEMO_CORPUS_FILES = [
    "{dir}/howto100m/HowTo100M_v1.csv",
    "{dir}/howto100m/caption.json",
    "{dir}/youcook2/youcookii_annotations_trainval.json",
    "{dir}/msrvtt/MSRVTT_JSFUSION_test.csv",
    "{dir}/crosstask/videos.csv",
    "{dir}/crosstask/tasks_primary.txt",
]


def start_demo_server():
    """Start `mcnflow demo-server` unless one already answers on the port; stop it when Snakemake exits."""
    from mcnflow.demo.server import served_root, wait_until_serving

    port = DEMO["port"]
    root = served_root(port)
    if root == str(Path(DEMO["corpus_dir"]).resolve()):
        return  # already serving this workflow's corpus (e.g. a second snakemake in the same directory)
    if root is not None:
        raise WorkflowError(
            f"port {port} serves another demo corpus ({root}); set demo.port to a free port"
        )
    Path("logs/demo").mkdir(parents=True, exist_ok=True)
    server_log = open("logs/demo/server.log", "a")
    command = [
        sys.executable,
        "-m",
        "mcnflow",
        "demo-server",
        "--root",
        DEMO["corpus_dir"],
        "--port",
        str(port),
        "--flaky",
        *DEMO.get("flaky", []),
    ]
    server = subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT)
    atexit.register(server.terminate)
    if not wait_until_serving(port):
        server.terminate()
        raise WorkflowError(
            f"the demo server did not start on port {port}; see logs/demo/server.log"
        )
