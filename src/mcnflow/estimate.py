"""``mcnflow estimate``: what a run of the configured workflow will cost, before it starts.

For every corpus of the config it counts the videos (its manifest under ``results/manifest`` when
that exists, else the corpus's own id file read through :class:`mcnflow.core.plan.Plan`, as the
workflow does when it plans), then prints per stage the expected CPU core-hours, GPU-hours and bytes:
downloads, the media stage (one decode per video: the kept normalized videos when ``normalize.keep``,
ResNet-152 frames, log-mel audio, 3D clips when an experiment reads them), the HDF5 feature files per
modality, training (steps x step time per experiment branch) and its checkpoints.

Rates come from a small YAML file the benchmarks write on *this* machine
(``benchmarks/bench_decode_once.py --save-rates``, ``benchmarks/gpu_check.sh``; default
``benchmarks/rates.yaml``). A rate nobody measured falls back to a default that is printed with its
source, so every number says where it came from: ``measured (<machine>)``, ``ledgers`` (the download
ledgers of this checkout), ``config`` or ``default (<source>)``.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from mcnflow.core.config import ConfigError, load_config

log = logging.getLogger(__name__)

DEFAULT_RATES_FILE = Path("benchmarks/rates.yaml")

# Labelled defaults: used only when no measurement is in the rates file.
DEFAULTS: dict[str, tuple[float, str]] = {
    "mean_duration_min": (6.5, "HowTo100M's mean video length, ~6.5 min (1.22M videos, ~134k hours)"),
    "download_bytes_per_min": (5.1e6, "assumed 360p H.264 ~0.55 Mbit/s + AAC 128 kbit/s"),
    # bench_decode_once.py on the project's 2-core development VM (synthetic noisy 360p, x264 veryfast)
    "chain_cpu_s_per_min": (7.85, "bench_decode_once.py on the 2-core dev VM: normalize + two re-decodes"),
    "media_keep_cpu_s_per_min": (6.7, "bench_decode_once.py on the 2-core dev VM, keep true"),
    "media_nokeep_cpu_s_per_min": (1.4, "bench_decode_once.py on the 2-core dev VM, keep false"),
    "media_keep_3d_cpu_s_per_min": (7.2, "bench_decode_once.py on the 2-core dev VM, keep true + 3D frames"),
    "media_nokeep_3d_cpu_s_per_min": (2.3, "bench_decode_once.py on the 2-core dev VM, keep false + 3D frames"),
    "logmel_cpu_s_per_min": (0.1, "bench_decode_once.py on the 2-core dev VM: numpy log-mel (0.04-0.14)"),
    "normalized_bytes_per_min": (4.9e6, "bench_decode_once.py: 454x256 x264 veryfast crf 23, 1 s GOPs, noisy "
                                        "synthetic picture (real footage compresses better)"),
    "resnet152_gpu_frames_per_s": (1100.0, "timm RTX 4090 AMP ResNet-152 1,977 img/s at 224x224 / 1.8 for "
                                           "224x398 frames; no A100/H100 figure; not measured"),
    "resnet152_cpu_frames_per_s": (1 / 0.37, "resnet.py: 0.37 s per 397x224 frame on a 2-core CPU"),
    "resnext3d_gpu_clips_per_s": (300.0, "assumed; not measured (benchmarks/gpu_check.sh measures it)"),
    "text_bytes_per_video": (6e3, "assumed: ~110 captions per HowTo100M video, ~50 bytes each in HDF5"),
    "survival": (0.75, "config download.canary.expected_survival"),
}
# Not guessed: without a measurement the training time is printed as unknown.
UNMEASURED = {"train_step_s": "benchmarks/gpu_check.sh (bench_train_step.py at the config.yaml sizes)"}


@dataclass(frozen=True)
class Rate:
    value: float | None
    source: str


class Rates:
    """Measured rates from the rates file, else labelled defaults."""

    def __init__(self, measured: Mapping[str, Any] | None = None, config: Mapping | None = None):
        self.measured = dict(measured or {})
        self.machine = str(self.measured.get("machine", "this machine"))
        self.overrides: dict[str, Rate] = {}
        if config is not None:
            survival = config["download"].get("canary", {}).get("expected_survival")
            if survival is not None:
                self.overrides["survival"] = Rate(float(survival), "config download.canary.expected_survival")

    def get(self, key: str) -> Rate:
        if key in self.overrides:
            return self.overrides[key]
        value = self.measured.get(key)
        if isinstance(value, (int, float)) and value > 0:
            return Rate(float(value), f"measured ({self.machine})")
        if key in DEFAULTS:
            default, source = DEFAULTS[key]
            return Rate(default, f"default ({source})")
        return Rate(None, f"not measured: run {UNMEASURED.get(key, 'the benchmarks')}")

    @classmethod
    def load(cls, path: Path | None, config: Mapping) -> "Rates":
        if path is not None and path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(data, Mapping):
                raise ConfigError(f"{path}: expected a mapping of rate names to numbers")
            return cls(data, config)
        return cls({}, config)


def save_rates(path: str | Path, rates: Mapping[str, Any]) -> Path:
    """Merge ``rates`` into the YAML rates file (what ``--save-rates`` of the benchmarks calls)."""
    path = Path(path)
    current = {}
    if path.is_file():
        current = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    current.update({key: (round(value, 6) if isinstance(value, float) else value) for key, value in rates.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(current, sort_keys=True), encoding="utf-8")
    return path


# --- the inputs ----------------------------------------------------------------------------------

def count_videos(config: Mapping, corpus: str, results: Path) -> tuple[int, str]:
    """(videos, where the count came from) for one corpus."""
    from mcnflow.core.plan import Plan
    from mcnflow.corpora import open_corpus

    manifest = results / "manifest" / f"{corpus}.tsv"
    if manifest.is_file():
        with open(manifest, encoding="utf-8") as handle:
            return max(0, sum(1 for _ in handle) - 1), f"manifest {manifest}"
    plan = Plan(config)
    id_file = Path(plan.id_file(corpus))
    if not id_file.exists():
        return 0, f"no manifest and no id file ({id_file} not found)"
    spec = config["corpora"][corpus]
    ids = open_corpus(corpus, spec).video_ids()
    return len(ids), f"id file {id_file}"


def ledger_rates(results: Path) -> dict[str, float]:
    """Mean bytes per minute and mean duration of the downloads this checkout already made."""
    from mcnflow.core.ledger import read_ledger

    total_bytes = total_seconds = videos = 0.0
    for ledger in sorted((results / "download").glob("*/shard-*.tsv")):
        for row in read_ledger(ledger):
            try:
                size, seconds = float(row.get("bytes") or 0), float(row.get("duration") or 0)
            except ValueError:
                continue
            if row.get("status") == "ok" and size > 0 and seconds > 0:
                total_bytes += size
                total_seconds += seconds
                videos += 1
    if videos < 10:  # too few to stand for a corpus
        return {}
    return {"download_bytes_per_min": total_bytes / (total_seconds / 60), "mean_duration_min": total_seconds / 60 / videos}


def checkpoint_bytes(config: Mapping, experiment: str) -> tuple[int, int]:
    """(one epoch checkpoint: parameters, Adam's two moments, the k-means queues; model.pt: parameters)."""
    import torch

    from mcnflow.core.config import deep_merge
    from mcnflow.model.mcn import MCN
    from mcnflow.training.trainer import queue_clips

    entry = config["experiments"][experiment]
    training = deep_merge(config["training"], entry.get("training") or {})
    reconstruction = bool(((entry.get("losses") or {}).get("reconstruction") or {}).get("enabled", True))
    with torch.device("meta"):
        model = MCN(entry["pairs"], entry.get("space", "shared"), embd_dim=training["embd_dim"],
                    video_dim=training["video_dim"], word_dim=training["word_dim"], recon_size=training["recon_size"],
                    reconstruction=reconstruction,
                    **({"audio_widths": training["audio_widths"]} if training.get("audio_widths") else {}))
    params = sum(p.numel() for p in model.parameters())
    spaces = len(model.spaces)
    queue = training["queue_batches"] * training["batch_size"] * queue_clips(training["n_pair"]) * training["embd_dim"]
    return int(params * 4 * 3 + spaces * queue * 4), int(params * 4)


# --- the estimate ---------------------------------------------------------------------------------

@dataclass
class Line:
    stage: str
    cpu_hours: float | None = 0.0
    gpu_hours: float | None = 0.0
    bytes: float = 0.0
    basis: str = ""


def estimate(config: Mapping, rates: Rates, counts: Mapping[str, int]) -> tuple[list[Line], dict]:
    """The cost lines of one run of the config for ``counts`` videos per corpus."""
    feature_corpora = sorted({config["train_corpus"]} | {b["corpus"] for b in config["evaluation"]["benchmarks"].values()})
    minutes = rates.get("mean_duration_min")
    survival = rates.get("survival")
    def surviving(corpus: str) -> float:
        # downloads survive at the expected rate; a local corpus's files are all there
        n = counts.get(corpus, 0)
        return n * survival.value if config["corpora"][corpus]["source"] == "url" else float(n)

    videos = sum(counts.get(corpus, 0) for corpus in config["corpora"])
    downloaded = sum(surviving(c) for c in config["corpora"] if config["corpora"][c]["source"] == "url")
    featured = sum(counts.get(corpus, 0) for corpus in feature_corpora)
    kept = sum(surviving(corpus) for corpus in feature_corpora)
    video_minutes = kept * minutes.value
    video_seconds = video_minutes * 60
    keep = bool(config["normalize"]["keep"])
    from mcnflow.core.plan import Plan

    video3d = Plan(config).uses_video3d()
    video = config["features"]["video"]
    gpu_model = video["device"] in ("auto", "cuda")
    lines: list[Line] = []

    download = rates.get("download_bytes_per_min")
    lines.append(Line("download", None, 0.0, downloaded * minutes.value * download.value,
                      f"{survival.value:.0%} survive ({survival.source}); {download.value / 1e6:.1f} MB/min "
                      f"({download.source})"))

    decode = rates.get(f"media_{'keep' if keep else 'nokeep'}{'_3d' if video3d else ''}_cpu_s_per_min")
    logmel = rates.get("logmel_cpu_s_per_min")
    cpu_s = video_minutes * (decode.value + logmel.value)
    frames = video_seconds * float(video["fps"])
    if gpu_model:
        model_rate = rates.get("resnet152_gpu_frames_per_s")
        gpu_s = frames / model_rate.value
    else:
        model_rate = rates.get("resnet152_cpu_frames_per_s")
        cpu_s += frames / model_rate.value
        gpu_s = 0.0
    basis = (f"decode {decode.value:.2f} CPU-s/min ({decode.source}); log-mel {logmel.value:.2f} CPU-s/min "
             f"({logmel.source}); ResNet-152 {model_rate.value:,.0f} frames/s on the {'GPU' if gpu_model else 'CPU'} "
             f"({model_rate.source})")
    if video3d:
        v3 = config["features"]["video3d"]
        clips_rate = rates.get("resnext3d_gpu_clips_per_s")
        gpu_s += video_seconds * float(v3["fps"]) / float(v3["clip_frames"]) / clips_rate.value
        basis += f"; 3D {clips_rate.value:,.0f} clips/s ({clips_rate.source})"
    normalized_bytes = 0.0
    if keep:
        per_min = rates.get("normalized_bytes_per_min")
        normalized_bytes = video_minutes * per_min.value
    lines.append(Line("media", cpu_s / 3600, gpu_s / 3600, 0.0, basis))
    if keep:
        lines.append(Line("normalized videos", None, None, normalized_bytes,
                          f"{per_min.value / 1e6:.1f} MB/min ({per_min.source}); normalize.keep true"))
    # HDF5: float16 rows (store.py layout); index and attributes are small
    lines.append(Line("video features", None, None, video_seconds * float(video["fps"]) * 2048 * 2,
                      f"float16 2048 x {video['fps']} rows/s"))
    audio = config["features"]["audio"]
    lines.append(Line("audio features", None, None, video_seconds * int(audio["n_mels"]) * 2 * 1000 / float(audio["hop_ms"]),
                      f"float16 {audio['n_mels']} x {1000 / float(audio['hop_ms']):g} frames/s"))
    if video3d:
        v3 = config["features"]["video3d"]
        lines.append(Line("video3d features", None, None,
                          video_seconds * float(v3["fps"]) / float(v3["clip_frames"]) * 2048 * 2,
                          f"float16 2048 x {float(v3['fps']) / float(v3['clip_frames']):g} rows/s"))
    text = rates.get("text_bytes_per_video")
    lines.append(Line("text features", None, None, kept * text.value, f"{text.value / 1e3:.0f} kB/video ({text.source})"))

    # training: one branch per (experiment, seed)
    training = config["training"]
    train_videos = int(surviving(config["train_corpus"]))
    step = rates.get("train_step_s")
    branches = [(name, len(spec.get("seeds") or config.get("seeds") or [1])) for name, spec in config["experiments"].items()]
    # as the trainer: whole batches per epoch (one smaller batch when there are fewer videos than a batch)
    per_epoch = 0 if not train_videos else max(1, train_videos // int(training["batch_size"]))
    steps = sum(n * int(training["epochs"]) * per_epoch for _, n in branches)
    lines.append(Line("train", None, None if step.value is None else steps * step.value / 3600, 0.0,
                      f"{steps:,} steps over {sum(n for _, n in branches)} branch(es); "
                      + (f"{step.value:.3f} s/step ({step.source})" if step.value else step.source)))
    keep_checkpoints = training.get("keep_checkpoints") or int(training["epochs"])
    checkpoint_total = 0.0
    for name, n in branches:
        epoch_checkpoint, model_file = checkpoint_bytes(config, name)
        checkpoint_total += n * (keep_checkpoints * epoch_checkpoint + model_file)
    lines.append(Line("checkpoints", None, None, checkpoint_total,
                      f"{keep_checkpoints} epoch checkpoint(s) + model.pt per branch (parameters, Adam moments, "
                      "k-means queues)"))
    summary = {"videos": videos, "featured": featured, "kept": kept, "minutes": minutes, "survival": survival,
               "hours": video_minutes / 60}
    return lines, summary


def _fmt_bytes(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(value) < 1000 or unit == "PB":
            return f"{value:,.1f} {unit}" if unit != "B" else f"{value:,.0f} B"
        value /= 1000
    return f"{value:,.1f} PB"


def _fmt_hours(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f}" if value >= 10 else f"{value:,.2f}"


def render(lines: list[Line], summary: Mapping, counts: Mapping[str, int], sources: Mapping[str, str]) -> str:
    out = []
    for corpus, n in counts.items():
        out.append(f"{corpus}: {n:,} videos ({sources[corpus]})")
    minutes, survival = summary["minutes"], summary["survival"]
    out.append(f"videos with features: {summary['kept']:,.0f} of {summary['featured']:,} "
               f"({survival.value:.0%} surviving: {survival.source}); mean length {minutes.value:g} min "
               f"({minutes.source}): {summary['hours']:,.0f} hours of video")
    out.append("")
    out.append(f"{'stage':<20}{'CPU core-h':>12}{'GPU-h':>10}{'bytes':>14}  basis")
    for line in lines:
        cpu = "" if line.cpu_hours == 0.0 else _fmt_hours(line.cpu_hours) if line.cpu_hours is not None else "-"
        gpu = "" if line.gpu_hours == 0.0 else _fmt_hours(line.gpu_hours) if line.gpu_hours is not None else "-"
        size = _fmt_bytes(line.bytes) if line.bytes else ""
        out.append(f"{line.stage:<20}{cpu:>12}{gpu:>10}{size:>14}  {line.basis}")
    total_cpu = sum(line.cpu_hours or 0.0 for line in lines)
    gpu_text = _fmt_hours(sum(line.gpu_hours or 0.0 for line in lines))
    if any(line.gpu_hours is None and line.stage == "train" for line in lines):
        gpu_text += "+?"  # the training time was not measured
    out.append(f"{'total':<20}{_fmt_hours(total_cpu):>12}{gpu_text:>10}"
               f"{_fmt_bytes(sum(line.bytes for line in lines)):>14}")
    return "\n".join(out)


# --- CLI -------------------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="extend", nargs="+", metavar="YAML", default=None,
                        help="config file(s), later ones override earlier ones (default: config.yaml)")
    parser.add_argument("--rates", type=Path, default=DEFAULT_RATES_FILE,
                        help=f"rates measured by the benchmarks (default {DEFAULT_RATES_FILE}; missing: defaults)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="where manifests and download ledgers of an earlier run are (default results/)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="mean video length in minutes (default: the download ledgers', else 6.5)")


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config or ["config.yaml"])
    measured = {}
    if args.rates is not None and args.rates.is_file():
        measured = yaml.safe_load(args.rates.read_text(encoding="utf-8")) or {}
    from_ledgers = ledger_rates(args.results)
    rates = Rates(measured, config)
    for key, value in from_ledgers.items():
        rates.overrides.setdefault(key, Rate(value, f"ledgers ({args.results}/download)"))
    if args.minutes is not None:
        rates.overrides["mean_duration_min"] = Rate(float(args.minutes), "--minutes")
    counts, sources = {}, {}
    for corpus in config["corpora"]:
        counts[corpus], sources[corpus] = count_videos(config, corpus, args.results)
    lines, summary = estimate(config, rates, counts)
    print(render(lines, summary, counts, sources))
    return 0
