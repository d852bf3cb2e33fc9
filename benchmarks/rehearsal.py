"""Rehearse the full-size run: each job's wall time and peak RSS from 10k to HowTo100M's 1.22M videos.

Does each job's cost stay flat (per-shard jobs) or grow at most linearly (jobs over the whole corpus)?

For each size it synthesises HowTo100M-shaped inputs in a temporary directory:

* ``HowTo100M_v1.csv`` (11-character YouTube-like ids; bench_plan_scale.make_inputs, which also writes
  a 457-video YouCook2 annotation file), and a ``caption.json`` in HowTo100M's per-video layout
  (``{vid: {"start": [...], "end": [...], "text": [...]}}``, 80-140 captions per video (~110, as 136M
  clips / 1.22M videos), 3.5-5.5 s each, 8-12 words; ~7 KB per video, ~8 GB at 1.22M). The entries are
  drawn once into a pool and repeated under each video's id: parsing cost depends on the shape, not on
  the words;
* a word2vec source of GoogleNews's size (3M words x 300) whose vectors are never written (HDF5 reads
  unwritten rows as zeros), so each text job reads the real word list;
* the ledgers the per-shard text job reads, and every shard's download ledger (for the survival table);
* feature shards for "training opens every shard": every shard of every modality the MCN experiment
  reads (2D 2048, 3D 2048, log-mel 40, text with 300-d vectors) with the real index of ``shard_size``
  videos, of which ``--stored-per-shard`` carry features (``--stored-seconds`` long) and the rest are
  recorded as ``no_media``: the loader's indexing is full-size while the disk stays small.

Then it runs the real jobs as separate processes and records each one's wall time and peak RSS
(``os.wait4`` in a small launcher: the job's and its waited-for children's ``ru_maxrss``): the manifest, the workflow's plan
(``snakemake -n``, as bench_plan_scale.py), the caption split, one shard's text extraction (the last full
shard, so the manifest is read to its end), the training loader over every shard (ClipDataset, a few
items read), evaluation's readers (the benchmark corpus and the HowTo100M ids it leaves out), the
survival table over every download ledger, and the summary. The flat jobs (text, summary) run last, in
rounds over all sizes from a copy of their small inputs, so a busy moment of a shared machine does not
land on one size only; their best wall time and largest RSS are kept. It fits each job's growth exponent (the
log-log slope of cost against corpus size) and writes ``benchmarks/results/rehearsal.tsv`` (one row per
job and size; profiles/slurm's resources are checked against it by tests/test_profile_resources.py)
and ``rehearsal.md``, and prints the table. A per-shard job passes at an exponent <= 0.1 for wall and
RSS; a job over the whole corpus at <= 1.1 (linear, with room for noise).

    .venv/bin/python benchmarks/rehearsal.py 10000 100000 1220000   # ~1 hour on 2 cores, ~20 GB of disk
    .venv/bin/python benchmarks/rehearsal.py 10000 100000           # a few minutes
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_plan_scale  # noqa: E402  (make_inputs, copy_workflow, dry_run_command)

DEFAULT_SIZES = (10_000, 100_000, 1_220_000)
RESULTS = REPO / "benchmarks" / "results"
CORPUS = "howto100m"
EXPERIMENT = "tv_ta_va"  # MCN: every modality, so training opens text, 2D, 3D and audio shards
BENCHMARK = "youcook2_retrieval"  # leaves out HowTo100M's videos: its readers read the whole id list
# HowTo100M's caption.json: 136M clips over 1.22M videos (~110 per video), ~4-5 s each
CAPTIONS_PER_VIDEO = (80, 140)
CAPTION_SECONDS = (3.5, 5.5)
WORDS_PER_CAPTION = (8, 12)
ENTRY_POOL = 256
SPOKEN_VOCABULARY = 20_000  # distinct words the synthetic narration draws from (Zipf-weighted)
# the GoogleNews binary: 3,000,000 words x 300 dimensions
WORD2VEC_WORDS = 3_000_000
WORD2VEC_DIM = 300
FEATURE_DIM = 2048  # ResNet-152 (2D) and ResNeXt-101 (3D) rows
VIDEO3D_ROWS_PER_SECOND = 1.5
AUDIO_FRAMES_PER_SECOND = 100
ITEMS_READ = 16
# A flat (per-shard) job passes at exponent <= FLAT_LIMIT; a job over the corpus at <= GROWING_LIMIT.
FLAT_LIMIT = 0.1
GROWING_LIMIT = 1.1
KB_PER_MB = 1024


@dataclass(frozen=True)
class Job:
    name: str
    kind: str  # "flat": cost must not grow with the corpus (per-shard jobs); "grows": at most linearly
    what: str


JOBS = (
    Job("manifest", "grows", "mcnflow manifest: the CSV -> results/manifest/howto100m.tsv"),
    Job("plan", "grows", "snakemake -n over the whole workflow"),
    Job("split_captions", "grows", "mcnflow split-captions: caption.json streamed once into per-shard files"),
    Job("extract_text", "flat", "mcnflow extract text: one 1000-video shard"),
    Job("training_loader", "grows", "ClipDataset over every shard (text, 2D, 3D, audio), a few items read"),
    Job("evaluation_readers", "grows", "YouCook2 segments minus HowTo100M's ids (the whole CSV)"),
    Job("survival", "grows", "mcnflow survival over every shard's download ledger"),
    Job("summarize", "flat", "mcnflow summarize (survival table, no metrics): its inputs do not grow with the corpus"),
)


# --- measuring ---------------------------------------------------------------------------------------

# A child's ru_maxrss starts at its parent's RSS (the mm it forked from counts until exec), and this
# process holds the inputs it built: so each job is started by this tiny launcher, forked from a fresh
# small interpreter, which reports the job's own wall time and peak RSS.
LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as handle:
    json.dump({"wall_s": time.perf_counter() - started, "max_rss_kb": usage.ru_maxrss,
               "cpu_s": usage.ru_utime + usage.ru_stime}, handle)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True)
class Figures:
    wall_s: float
    max_rss_mb: float
    cpu_s: float  # user + system: what other processes on a shared machine do not inflate


def run_job(name: str, command: list[str], cwd: Path, log_dir: Path, env: dict | None = None) -> Figures:
    """Run one job in its own process: its wall time, and peak RSS and CPU time of it and its children."""
    log_path, figures = log_dir / f"{name}.log", log_dir / f"{name}.json"
    # gigabytes of inputs just written would otherwise be flushed to disk while the job runs
    os.sync()
    with open(log_path, "w") as log:
        code = subprocess.call([sys.executable, "-S", "-c", LAUNCHER, str(figures), *command], cwd=cwd, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{name} failed (exit {code}): {' '.join(command)[:300]}\n{tail}")
    measured = json.loads(figures.read_text())
    return Figures(measured["wall_s"], measured["max_rss_kb"] / KB_PER_MB, measured["cpu_s"])


def growth_exponent(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(size)."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


# --- inputs --------------------------------------------------------------------------------------------

def spoken_words() -> tuple[list[str], list[float]]:
    """Distinct pseudo-words with Zipf weights, frequent ones short (like "the", "so", "we"): word r
    spells r in base 20 with one syllable per digit."""
    syllables = ["ka", "to", "ri", "ne", "mo", "sa", "lu", "pe", "di", "fa", "go", "chi", "ba", "ve", "zo",
                 "el", "an", "or", "us", "it"]
    words = []
    for rank in range(SPOKEN_VOCABULARY):
        digits, value = [], rank
        while True:
            digits.append(syllables[value % len(syllables)])
            value //= len(syllables)
            if not value:
                break
        words.append("".join(reversed(digits)))
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    return words, weights


def caption_entry(rng: random.Random, words: list[str], cum_weights: list[float]) -> dict:
    """One video's caption.json entry as HowTo100M has them."""
    starts, ends, texts = [], [], []
    t = rng.uniform(0.0, 5.0)
    for _ in range(rng.randint(*CAPTIONS_PER_VIDEO)):
        length = rng.uniform(*CAPTION_SECONDS)
        starts.append(round(t, 2))
        ends.append(round(t + length, 2))
        texts.append(" ".join(rng.choices(words, cum_weights=cum_weights, k=rng.randint(*WORDS_PER_CAPTION))))
        t += length
    return {"start": starts, "end": ends, "text": texts}


def write_caption_json(path: Path, video_ids: list[str], seed: int = 0) -> int:
    """HowTo100M's caption.json for ``video_ids``; returns its size in bytes."""
    rng = random.Random(seed)
    words, weights = spoken_words()
    cum = list(np.cumsum(weights))
    pool = [json.dumps(caption_entry(rng, words, cum)) for _ in range(ENTRY_POOL)]
    with open(path, "w", encoding="utf-8", buffering=1 << 24) as handle:
        handle.write("{")
        for i, video_id in enumerate(video_ids):
            handle.write(("" if i == 0 else ", ") + json.dumps(video_id) + ": " + pool[i % ENTRY_POOL])
        handle.write("}")
    return path.stat().st_size


def write_word2vec(path: Path) -> None:
    """A word2vec source of GoogleNews's size: the spoken words first, then filler phrases; the vector
    rows are never written (zeros when read), so the file is small and quick to make."""
    import h5py

    from mcnflow.features.word2vec import FORMAT, FORMAT_VERSION, STR

    words, _ = spoken_words()
    words = words + [f"phrase_{i:07d}" for i in range(WORD2VEC_WORDS - len(words))]
    with h5py.File(path, "w") as handle:
        handle.attrs["format"] = FORMAT
        handle.attrs["format_version"] = FORMAT_VERSION
        handle.attrs["source"] = "rehearsal"
        handle.attrs["fingerprint"] = f"rehearsal-{len(words)}x{WORD2VEC_DIM}"
        handle.create_dataset("words", data=np.array(words, dtype=object), dtype=STR)
        handle.create_dataset("vectors", shape=(len(words), WORD2VEC_DIM), dtype=np.float32)
        handle.attrs["complete"] = True


def read_ids(csv_path: Path) -> list[str]:
    with open(csv_path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return [row[0] for row in reader if row]


def shard_ids(video_ids: list[str], shard_size: int) -> list[list[str]]:
    return [video_ids[i:i + shard_size] for i in range(0, len(video_ids), shard_size)]


def write_download_ledgers(directory: Path, shards: list[list[str]], seed: int = 0) -> list[Path]:
    """Every shard's download ledger, with HowTo100M-like outcomes (~75% survive)."""
    from mcnflow.core.ledger import DOWNLOAD_COLUMNS, write_ledger
    from mcnflow.core.shards import shard_name
    from mcnflow.core.status import DownloadStatus

    rng = random.Random(seed)
    outcomes = [DownloadStatus.OK] * 15 + [DownloadStatus.UNAVAILABLE] * 3 + [DownloadStatus.PRIVATE,
                                                                              DownloadStatus.REMOVED]
    paths = []
    for number, ids in enumerate(shards):
        rows = []
        for video_id in ids:
            status = rng.choice(outcomes)
            ok = status == DownloadStatus.OK
            rows.append({"video_id": video_id, "status": status, "message": "" if ok else "Video unavailable",
                         "bytes": rng.randint(10**6, 10**8) if ok else 0,
                         "duration": round(rng.uniform(60, 900), 1) if ok else "",
                         "path": f"videos/{video_id}.mp4" if ok else "", "captions_path": "", "attempts": 1})
        paths.append(write_ledger(directory / f"shard-{shard_name(number)}.tsv", rows, DOWNLOAD_COLUMNS))
    return paths


def write_normalize_ledger(path: Path, video_ids: list[str]) -> Path:
    from mcnflow.core.ledger import NORMALIZE_COLUMNS, write_ledger
    from mcnflow.core.status import NormalizeStatus

    rows = [{"video_id": v, "status": NormalizeStatus.OK, "has_audio": True, "duration": 390.0, "width": 454,
             "height": 256, "fps": 30, "path": f"{v}.mp4"} for v in video_ids]
    return write_ledger(path, rows, NORMALIZE_COLUMNS)


def write_training_shards(features: Path, shards: list[list[str]], stored: int, seconds: float,
                          n_mels: int, seed: int = 0) -> None:
    """Text, 2D, 3D and audio shards of every shard: the full index, ``stored`` videos with features."""
    from mcnflow.core.status import FeatureStatus
    from mcnflow.core.shards import shard_name
    from mcnflow.corpora.base import Caption
    from mcnflow.features.store import ShardWriter
    from mcnflow.features.text import encode_captions

    rng = np.random.default_rng(seed)
    words, _ = spoken_words()
    word_ids = {word: index for index, word in enumerate(words)}
    table = rng.standard_normal((len(words), WORD2VEC_DIM)).astype(np.float32)
    n_captions = int(seconds // CAPTION_SECONDS[1])
    captions = [Caption(k * CAPTION_SECONDS[1], (k + 1) * CAPTION_SECONDS[1],
                        " ".join(words[(k * 7 + j) % len(words)] for j in range(WORDS_PER_CAPTION[1])))
                for k in range(n_captions)]
    text_fields = encode_captions(captions, word_ids, WORDS_PER_CAPTION[1])
    used = sorted(set(text_fields["token_ids"].tolist()))
    remap = {source: i for i, source in enumerate(used)}
    text_fields["token_ids"] = np.asarray([remap[i] for i in text_fields["token_ids"].tolist()], np.int32)
    arrays = {
        "video": lambda: rng.standard_normal((int(seconds), FEATURE_DIM)).astype(np.float16),
        "video3d": lambda: rng.standard_normal((int(seconds * VIDEO3D_ROWS_PER_SECOND), FEATURE_DIM)).astype(np.float16),
        "audio": lambda: rng.standard_normal((n_mels, int(seconds * AUDIO_FRAMES_PER_SECOND))).astype(np.float16),
    }
    attrs = {"video": {"fps": 1.0}, "video3d": {"rows_per_second": VIDEO3D_ROWS_PER_SECOND},
             "audio": {"hop_ms": 1000.0 / AUDIO_FRAMES_PER_SECOND}}
    fingerprint = f"rehearsal-{len(words)}x{WORD2VEC_DIM}"
    for number, ids in enumerate(shards):
        name = shard_name(number)
        for modality in ("text", "video", "video3d", "audio"):
            store_as = "video" if modality == "video3d" else modality
            shard_attrs = {"word2vec_fingerprint": fingerprint} if modality == "text" else attrs[modality]
            path = features / modality / f"shard-{name}.h5"
            with ShardWriter(path, store_as, CORPUS, number, attrs=shard_attrs) as writer:
                if modality == "text":
                    writer.add_word_table([words[i] for i in used], table[used])
                for k, video_id in enumerate(ids):
                    if k < stored:
                        writer.add(video_id, text_fields if modality == "text" else arrays[modality]())
                    else:
                        writer.mark(video_id, FeatureStatus.NO_MEDIA)


# --- the in-process jobs (each run as `rehearsal.py --job NAME --root DIR` in its own process) ---------

def job_training_loader(root: Path) -> None:
    from mcnflow.core.config import load_config
    from mcnflow.core.plan import Plan, experiment_modalities
    from mcnflow.training.dataset import ClipDataset

    plan = Plan(load_config([root / "config.yaml", root / "bench.yaml"]))
    seed = plan.seeds(EXPERIMENT)[0]
    settings = plan.experiment_settings(EXPERIMENT, seed)
    training = settings["training"]
    features = root / "results" / "features" / CORPUS
    shards = {m: sorted(str(p) for p in (features / m).glob("shard-*.h5")) for m in ("text", "video", "video3d", "audio")}
    dataset = ClipDataset(shards=shards, video_features=training["video_features"],
                          modalities=experiment_modalities(settings["pairs"]), n_pair=training["n_pair"],
                          min_time=training["min_time"], max_words=training["max_words"],
                          audio_frames=training["audio_frames"], seed=training["seed"])
    step = max(1, len(dataset) // ITEMS_READ)
    for index in range(0, len(dataset), step)[:ITEMS_READ]:
        dataset[index]
    dataset.close()
    print(f"{len(shards['text'])} shards per modality, {len(dataset)} usable videos, {ITEMS_READ} read")


def job_evaluation_readers(root: Path) -> None:
    from mcnflow.core.config import load_config
    from mcnflow.core.plan import Plan
    from mcnflow.corpora import open_corpus
    from mcnflow.evaluation.cli import excluded_ids
    from mcnflow.evaluation.core import exclude_videos

    plan = Plan(load_config([root / "config.yaml", root / "bench.yaml"]))
    settings = plan.settings("evaluate", experiment=EXPERIMENT, seed=str(plan.seeds(EXPERIMENT)[0]),
                             benchmark=BENCHMARK)
    excluded = excluded_ids(settings)
    segments, n_excluded = exclude_videos(open_corpus(settings["corpus"], dict(settings["spec"])).segments(),
                                          excluded)
    print(f"{len(segments)} segments kept, {n_excluded} excluded, {len(excluded)} ids left out")


IN_PROCESS_JOBS = {"training_loader": job_training_loader, "evaluation_readers": job_evaluation_readers}


# --- one size --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FlatJob:
    """A flat job's command, run later from a small copy of its inputs (the size's inputs are gone by then)."""
    command: list[str]
    cwd: Path
    env: dict


def rehearse(n_videos: int, work: Path, word2vec: Path, args: argparse.Namespace
             ) -> tuple[dict[str, Figures], dict[str, FlatJob], str]:
    """Build the inputs for ``n_videos`` under ``work``, run the jobs that grow with the corpus and keep
    what the flat ones need: their figures, the flat jobs, and a line on the inputs and the machine's load."""
    from mcnflow.core.config import load_config
    from mcnflow.core.shards import shard_name

    root = work / f"videos-{n_videos}"
    root.mkdir()
    t0 = time.perf_counter()
    overrides = bench_plan_scale.make_inputs(root, n_videos)
    bench_plan_scale.copy_workflow(root)
    config = load_config([root / "config.yaml"])
    shard_size = args.shard_size or config["shard_size"]
    overrides["shard_size"] = shard_size
    (root / "bench.yaml").write_text(yaml.safe_dump(overrides))
    settings = ["--config", "config.yaml", "bench.yaml"]
    csv_path = Path(overrides["corpora"][CORPUS]["videos_csv"])
    video_ids = read_ids(csv_path)
    caption_bytes = write_caption_json(Path(overrides["corpora"][CORPUS]["captions"]), video_ids)
    shards = shard_ids(video_ids, shard_size)
    results = Path("results")
    downloads = write_download_ledgers(root / results / "download" / CORPUS, shards)
    write_training_shards(root / results / "features" / CORPUS, shards, args.stored_per_shard, args.stored_seconds,
                          config["features"]["audio"]["n_mels"])
    text_shard = shard_name(n_videos // shard_size - 1)  # the last full shard: the manifest is read to its end
    write_normalize_ledger(root / results / "normalize" / CORPUS / f"shard-{text_shard}.tsv", shards[int(text_shard)])
    print(f"  inputs for {n_videos} videos ({len(shards)} shards, caption.json {caption_bytes / 1e9:.2f} GB) "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)

    python = [sys.executable]
    mcnflow = [*python, "-m", "mcnflow"]
    manifest = results / "manifest" / f"{CORPUS}.tsv"
    captions = results / "captions" / CORPUS
    plan_command, plan_env = bench_plan_scale.dry_run_command()
    growing = {
        "manifest": [*mcnflow, "manifest", "--corpus", CORPUS, *settings, "--output", str(manifest)],
        "plan": plan_command,
        "split_captions": [*mcnflow, "split-captions", "--corpus", CORPUS, *settings, "--manifest", str(manifest),
                           "--output", str(captions)],
        "training_loader": [*python, __file__, "--job", "training_loader", "--root", str(root)],
        "evaluation_readers": [*python, __file__, "--job", "evaluation_readers", "--root", str(root)],
        "survival": [*mcnflow, "survival", "--corpus", CORPUS, "--output", str(results / "survival.tsv"),
                     "--ledgers", *(str(path.relative_to(root)) for path in downloads)],
    }
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    logs = root / "logs"
    logs.mkdir()
    measured = {}
    for job in JOBS:
        if job.name in growing:
            measured[job.name] = figures = run_job(job.name, growing[job.name], root, logs,
                                                   plan_env if job.name == "plan" else env)
            print(f"  {job.name:<19} {figures.wall_s:8.1f} s {figures.max_rss_mb:8.0f} MB", flush=True)

    # the flat jobs' inputs: the whole manifest, the shard's caption file and ledgers, the survival table
    kit = work / f"flat-{n_videos}"
    caption_file = captions / f"shard-{text_shard}.jsonl"
    download = results / "download" / CORPUS / f"shard-{text_shard}.tsv"
    normalize = results / "normalize" / CORPUS / f"shard-{text_shard}.tsv"
    for path in (Path("config.yaml"), Path("bench.yaml"), manifest, caption_file, download, normalize,
                 results / "survival.tsv"):
        (kit / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / path, kit / path)
    (kit / "logs").mkdir()
    flat = {
        "extract_text": FlatJob([*mcnflow, "extract", "text", "--corpus", CORPUS, *settings, "--manifest",
                                 str(manifest), "--shard", text_shard, "--download-ledger", str(download),
                                 "--captions", str(caption_file), "--normalize-ledger", str(normalize),
                                 "--word2vec", str(word2vec), "--output", f"results/text/shard-{text_shard}.h5",
                                 "--ledger", f"results/text/shard-{text_shard}.tsv"], kit, env),
        "summarize": FlatJob([*mcnflow, "summarize", "--survival", str(results / "survival.tsv"),
                              "--out-dir", str(results / "summary"), *settings], kit, env),
    }
    if not args.keep:
        shutil.rmtree(root)
    # the machine is shared: its load says how much the wall times are to be trusted
    return measured, flat, (f"{n_videos:,} videos: {len(shards)} shards, caption.json {caption_bytes / 1e9:.2f} "
                            f"GB, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs after its jobs")


def run_flat_jobs(flat: dict[int, dict[str, FlatJob]], repeats: int) -> dict[int, dict[str, Figures]]:
    """Every flat job of every size, ``repeats`` rounds over the sizes in turn (so the machine's load hits
    each size alike): the best wall and CPU time and the largest peak RSS of each."""
    runs: dict[int, dict[str, list[Figures]]] = {n: {name: [] for name in jobs} for n, jobs in flat.items()}
    for _ in range(repeats):
        for n, jobs in flat.items():
            for name, job in jobs.items():
                shutil.rmtree(job.cwd / "results" / "text", ignore_errors=True)  # each text run starts afresh
                runs[n][name].append(run_job(name, job.command, job.cwd, job.cwd / "logs", job.env))
    best = {}
    for n, jobs in runs.items():
        best[n] = {name: Figures(min(f.wall_s for f in figures), max(f.max_rss_mb for f in figures),
                                 min(f.cpu_s for f in figures)) for name, figures in jobs.items()}
        for name, figures in best[n].items():
            print(f"  {n:>9} videos {name:<19} {figures.wall_s:8.1f} s {figures.max_rss_mb:8.0f} MB", flush=True)
    return best


# --- report -----------------------------------------------------------------------------------------------

def write_results(sizes: list[int], measured: dict[int, dict[str, Figures]], shard_size: int,
                  notes: list[str], repeats: int, out: Path) -> tuple[str, bool]:
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    with open(out.with_suffix(".tsv"), "w", encoding="utf-8") as handle:
        handle.write("job\tkind\tvideos\tshards\twall_s\tmax_rss_mb\tcpu_s\n")
        for n in sizes:
            for job in JOBS:
                f = measured[n][job.name]
                handle.write(f"{job.name}\t{job.kind}\t{n}\t{math.ceil(n / shard_size)}\t{f.wall_s:.2f}\t"
                             f"{f.max_rss_mb:.0f}\t{f.cpu_s:.2f}\n")
    lines = [f"# Rehearsal: job cost against corpus size ({machine})", "",
             f"`benchmarks/rehearsal.py {' '.join(map(str, sizes))}` (shard_size {shard_size}). Wall time in "
             f"seconds / peak RSS in MB per job (flat jobs: best wall time and largest RSS of {repeats} runs, "
             "taken in turns over the sizes); exponent = log-log slope of cost against corpus size (CPU: user + "
             f"system seconds, which the machine's other load does not inflate). Flat (per-shard) jobs must stay "
             f"flat (wall and RSS exponent <= {FLAT_LIMIT}), jobs over the corpus at most linear (<= {GROWING_LIMIT}).",
             ""]
    header = ("| job | kind | " + " | ".join(f"{n:,} videos" for n in sizes)
              + " | exponent wall | exponent RSS | exponent CPU | |")
    lines += [header, "|" + " --- |" * (len(sizes) + 6)]
    passed = True
    for job in JOBS:
        figures = [measured[n][job.name] for n in sizes]
        cells = [f"{f.wall_s:.1f} s / {f.max_rss_mb:.0f} MB" for f in figures]
        if len(sizes) > 1:
            slopes = [growth_exponent(sizes, [getattr(f, key) for f in figures])
                      for key in ("wall_s", "max_rss_mb", "cpu_s")]
            limit = FLAT_LIMIT if job.kind == "flat" else GROWING_LIMIT
            ok = max(slopes[:2]) <= limit
            passed &= ok
            verdict = f"{'ok' if ok else 'FAILS'} (<= {limit})"
            lines.append(f"| {job.name} | {job.kind} | " + " | ".join(cells)
                         + "".join(f" | {slope:.2f}" for slope in slopes) + f" | {verdict} |")
        else:
            lines.append(f"| {job.name} | {job.kind} | " + " | ".join(cells) + " | - | - | - | one size |")
    lines += ["", "Inputs:", ""] + [f"- {note}" for note in notes]
    lines += ["", "Jobs:", ""] + [f"- `{job.name}`: {job.what}" for job in JOBS]
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    return text, passed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=list(DEFAULT_SIZES), help="corpus sizes in videos")
    parser.add_argument("--shard-size", type=int, help="videos per shard (default: config.yaml's shard_size)")
    parser.add_argument("--stored-per-shard", type=int, default=1,
                        help="videos per training shard that carry features (the rest: no_media)")
    parser.add_argument("--stored-seconds", type=float, default=30.0, help="their length in seconds")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of the flat jobs over the sizes (best wall time, largest peak RSS kept)")
    parser.add_argument("--work-dir", help="where the inputs go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep each size's inputs and outputs")
    parser.add_argument("--out", default=str(RESULTS / "rehearsal"), help="results path without suffix")
    parser.add_argument("--job", choices=sorted(IN_PROCESS_JOBS), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        IN_PROCESS_JOBS[args.job](Path(args.root))
        return 0
    from mcnflow.core.config import load_config

    shard_size = args.shard_size or load_config([REPO / "config.yaml"])["shard_size"]
    sizes = sorted(set(args.sizes))
    if any(n < shard_size for n in sizes):
        parser.error(f"every size must hold at least one full shard ({shard_size} videos)")
    args.shard_size = shard_size
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="mcnflow-rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    measured: dict[int, dict[str, Figures]] = {}
    flat: dict[int, dict[str, FlatJob]] = {}
    notes: list[str] = []
    try:
        word2vec = work / "word2vec.h5"
        write_word2vec(word2vec)
        for n in sizes:
            print(f"{n} videos:", flush=True)
            started = time.perf_counter()
            measured[n], flat[n], note = rehearse(n, work, word2vec, args)
            notes.append(note)
            print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
        print(f"flat jobs, {args.repeats} rounds over the sizes:", flush=True)
        for n, figures in run_flat_jobs(flat, args.repeats).items():
            measured[n].update(figures)
    finally:
        if not args.keep:
            for kit in work.glob("flat-*"):
                shutil.rmtree(kit, ignore_errors=True)
            if not args.work_dir:
                shutil.rmtree(work, ignore_errors=True)
    text, passed = write_results(sizes, measured, shard_size, notes, args.repeats, Path(args.out))
    print(text)
    print(f"wrote {Path(args.out).with_suffix('.tsv')} and .md")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
