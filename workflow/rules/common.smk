# Validation, the corpus/shard/experiment tables and the small input functions the rules call.
import atexit
import os
import subprocess
import sys
from pathlib import Path

from mcnflow.core.config import validate_config
from mcnflow.core.plan import Plan, settings_file
from mcnflow.core.streams import NAMES as STREAM_NAMES
from mcnflow.corpora import open_corpus
from mcnflow.demo.corpus import planned_video_ids
from mcnflow.core.shards import shard_names

validate_config(config)

# Rules run `python -m mcnflow` from this checkout's src/ (jobs inherit the environment), so a conda
# env (envs/) needs only third-party packages and a venv with mcnflow installed works the same.
os.environ.update(PYTHONPATH=str(Path(workflow.basedir) / "src"))

PLAN = Plan(config)
# One resource per egress route, so YouTube's per-IP limits hold per route whatever --cores / jobs allow;
# a limit given on the command line (--resources route_0=N) wins.
for _route, _limit in PLAN.route_limits().items():
    if _route not in workflow.global_resources:
        workflow.register_resource(_route, _limit)
CORPORA = PLAN.corpora
EXPERIMENTS = PLAN.experiments
BENCHMARKS = PLAN.benchmarks
DEMO = PLAN.demo
TRAIN_CORPUS = PLAN.train_corpus
FEATURE_CORPORA = PLAN.feature_corpora


def count_videos(corpus):
    """Videos in a corpus, read cheaply at planning time (the demo's come from its settings)."""
    spec = CORPORA[corpus]
    id_file = PLAN.id_file(corpus)
    if not Path(id_file).exists() and DEMO and corpus in planned_video_ids(DEMO):
        ids = planned_video_ids(DEMO)[corpus]
        return len(ids[: spec["limit"]] if spec.get("limit") else ids)
    if not Path(id_file).exists():
        # Plan one shard so dry runs and --lint work; running stops at the manifest rule's missing input.
        logger.warning(
            f"corpora.{corpus}: file not found: {id_file} "
            "(planned as one shard; the manifest rule needs it)"
        )
        return 0
    return len(open_corpus(corpus, spec).video_ids())


SHARDS = {
    corpus: shard_names(count_videos(corpus), PLAN.shard_size()) for corpus in CORPORA
}


wildcard_constraints:
    corpus="|".join(CORPORA),
    shard=r"\d{5}",
    modality="|".join(STREAM_NAMES),
    experiment="|".join(EXPERIMENTS),
    seed=r"\d+",
    benchmark="|".join(BENCHMARKS),


def shard_files(pattern):
    """Input function: ``pattern`` expanded over every shard of the job's corpus."""

    def files(wildcards):
        return expand(pattern, corpus=wildcards.corpus, shard=SHARDS[wildcards.corpus])

    return files


def corpus_shard_files(pattern, corpus, **kwargs):
    return expand(pattern, corpus=corpus, shard=SHARDS[corpus], **kwargs)


# --- settings: each job gets its stage's settings (mcnflow.core.plan) as a content-addressed JSON
# file. As a param, the file name is an exact rerun trigger (it changes exactly when the settings do;
# sorted-key JSON, so YAML key order never matters) and it keeps command lines short.
# Params are functions so Snakemake does not read the braces of JSON (e.g. "{video_id}") as wildcards.


def stage_settings(stage, *wildcard_names):
    """Param: the settings file of ``stage`` for the job's wildcards (corpus / experiment / benchmark)."""

    def param(wildcards):
        names = {name: getattr(wildcards, name) for name in wildcard_names}
        return settings_file(stage, PLAN.settings(stage, **names))

    return param


FEATURE_SHARD = "results/features/{corpus}/{modality}/shard-{shard}.h5"
FEATURE_LEDGER = "results/features/{corpus}/{modality}/shard-{shard}.tsv"


def feature_files(corpus, streams):
    """Per feature stream (mcnflow.core.streams), the corpus's shard files of that stream."""
    return {m: corpus_shard_files(FEATURE_SHARD, corpus, modality=m) for m in streams}


def media_outputs():
    """The media job's outputs: an HDF5 file and a ledger per stream it makes (PLAN.media_streams)."""
    outputs = {}
    for name in PLAN.media_streams():
        outputs[name] = FEATURE_SHARD.replace("{modality}", name)
        outputs[f"{name}_ledger"] = FEATURE_LEDGER.replace("{modality}", name)
    return outputs


def media_output_args(wildcards, output):
    """``--<stream>-output H5 --<stream>-ledger TSV`` for each stream the media job makes."""
    return " ".join(
        f"--{name}-output {output[name]} --{name}-ledger {output[f'{name}_ledger']}"
        for name in PLAN.media_streams()
    )


def stats_inputs(wildcards):
    """Every feature ledger of the corpus: each stream it gets (PLAN.feature_streams)."""
    return [
        ledger
        for name in PLAN.feature_streams()
        for ledger in corpus_shard_files(
            FEATURE_LEDGER, wildcards.corpus, modality=name
        )
    ]


# --- targets ---------------------------------------------------------------------------------


BRANCHES = PLAN.branches()


def evaluation_files():
    return [
        f
        for benchmark in BENCHMARKS
        for f in branch_files(
            "results/eval/{experiment}/seed-{seed}/{benchmark}.json",
            benchmark=benchmark,
        )
    ]


def branch_files(pattern, **kwargs):
    """``pattern`` for every (experiment, seed) branch."""
    return [
        pattern.format(experiment=experiment, seed=seed, **kwargs)
        for experiment, seed in BRANCHES
    ]


def all_targets():
    return [
        *expand("results/download/{corpus}/survival.tsv", corpus=CORPORA),
        *expand("results/features/{corpus}/stats.tsv", corpus=FEATURE_CORPORA),
        *branch_files("results/train/{experiment}/seed-{seed}/model.pt"),
        *evaluation_files(),
        "results/summary.csv",
    ]


# --- input functions of the rule files ------------------------------------------------------


def evaluation_inputs(wildcards):
    corpus = PLAN.benchmark_corpus(wildcards.benchmark)
    files = feature_files(
        corpus, PLAN.feature_sets(wildcards.experiment, training=False)
    )
    files["checkpoint"] = (
        f"results/train/{wildcards.experiment}/seed-{wildcards.seed}/model.pt"
    )
    files["manifest"] = f"results/manifest/{corpus}.tsv"
    files["word2vec"] = WORD2VEC
    excluded = PLAN.excluded_id_file(wildcards.benchmark)
    if excluded:
        # the video ids the benchmark leaves out (MCN's YouCook2: those of HowTo100M)
        files["excluded_ids"] = excluded
    return files


def manifest_inputs(wildcards):
    return PLAN.corpus_input_files(wildcards.corpus)


def training_inputs(wildcards):
    # Only the training corpus's shards: evaluation corpora never rerun or block training.
    return feature_files(TRAIN_CORPUS, PLAN.feature_sets(wildcards.experiment))


WORD2VEC = "results/features/word2vec.h5"


def split_caption_files(corpus):
    """The corpus's captions split per shard (results/captions/<corpus>), when they are (HowTo100M's caption.json)."""
    return (
        {"captions": f"results/captions/{corpus}"}
        if PLAN.splits_captions(corpus)
        else {}
    )


def text_caption_inputs(wildcards):
    return split_caption_files(wildcards.corpus)


def text_captions_arg(wildcards, inputs):
    """``--captions`` with the job's own shard's caption file, for a corpus whose captions are split."""
    if "captions" not in inputs.keys():
        return ""
    return f"--captions {inputs.captions}/shard-{wildcards.shard}.jsonl"


def word2vec_inputs(wildcards):
    """The GoogleNews binary, or the training corpus's manifest, download ledgers (VTT captions) and
    split captions (caption.json)."""
    if PLAN.word2vec_from_googlenews():
        binary = PLAN.word2vec_inputs()
        if not all(Path(path).exists() for path in binary):
            # Dry runs and --lint still plan; the job stops naming features.text.word2vec.path.
            logger.warning(
                f"features.text.word2vec.path: file not found: {binary[0]} (the word2vec job needs it)"
            )
            return {}
        return {"binary": binary}
    return {
        "manifest": f"results/manifest/{TRAIN_CORPUS}.tsv",
        "ledgers": corpus_shard_files(
            "results/download/{corpus}/shard-{shard}.tsv", TRAIN_CORPUS
        ),
        "corpus_files": PLAN.corpus_input_files(TRAIN_CORPUS),
        **split_caption_files(TRAIN_CORPUS),
    }


def word2vec_args(inputs):
    if "manifest" not in inputs.keys():
        return ""
    captions = (
        f" --captions-dir {inputs.captions}" if "captions" in inputs.keys() else ""
    )
    return (
        f"--manifest {inputs.manifest} --download-ledgers "
        + " ".join(inputs.ledgers)
        + captions
    )


def feature_args(inputs):
    """``--<stream> SHARD...`` for each feature stream among the inputs (``--video ... --text ...``)."""
    sets = [s for s in STREAM_NAMES if s in inputs.keys()]
    return " ".join(f"--{s} " + " ".join(inputs[s]) for s in sets)


# --- demo mode --------------------------------------------------------------------------------


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
