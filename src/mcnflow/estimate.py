"""``mcnflow estimate``: what a run of the configured workflow will cost, before it starts.

For every corpus of the config it counts the videos (its manifest under ``results/manifest`` when
that exists, else the corpus's own id file read through :class:`mcnflow.core.plan.Plan`, as the
workflow does when it plans, else the corpus's published size), then prints per stage the expected
CPU core-hours, GPU-hours and bytes: downloads, the media stage (one decode per video: the kept
normalized videos when ``normalize.keep``, ResNet-152 frames, log-mel audio, 3D clips when an
experiment reads them), the HDF5 feature files per modality, training (steps x step time per
experiment branch) and its checkpoints. Below the table it names the two long waits:

* the download's wall-clock in days, from the profile's concurrency (``--profile``: its
  ``resources: net:``), yt-dlp's sleeps, the per-route rate YouTube allows and ``download.routes``,
  and which of the two limits binds;
* training GPU-hours per experiment (summed over its seeds), from a measured step time scaled to the
  experiment's FLOPs (labelled GPU-measured or CPU-measured), else from the FLOP count alone.

Rates come from a small YAML file the benchmarks write on *this* machine
(``benchmarks/bench_decode_once.py --save-rates``, ``benchmarks/bench_train_step.py --save-rates``,
``benchmarks/gpu_check.sh --save-rates``; default ``benchmarks/rates.yaml``). A rate nobody measured
falls back to a default that is printed with its source, so every number says where it came from:
``measured (<machine>)``, ``ledgers`` (the download ledgers and job wall times of this checkout),
``config`` or ``default (<source>)``.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from mcnflow.core.config import ConfigError, load_config
from mcnflow.statistics import read_power

log = logging.getLogger(__name__)

DEFAULT_RATES_FILE = Path("benchmarks/rates.yaml")
DEFAULT_PROFILE = Path("profiles/slurm")
DEFAULT_BENCHMARKS = Path("benchmarks/results")  # where the rules' `benchmark:` files go

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
    # the download's wall-clock
    "requests_per_video": (1000 / 300, "yt-dlp wiki: a guest session's ~1000 requests per ~300 videos"),
    "requests_per_video_cookies": (4000 / 2000, "yt-dlp wiki: a logged-in session's ~4000 requests per ~2000 videos"),
    "extract_s_per_video": (3.0, "assumed: web page, player API answers and the JavaScript challenge"),
    "download_bytes_per_s": (5e6, "assumed: 5 MB/s per connection from YouTube's CDN"),
    # training when no step time was measured: the FLOP count at a datasheet rate
    "gpu_fp16_tflops": (989.4, "NVIDIA H100/H200 SXM datasheet: dense FP16/BF16 tensor TFLOP/s"),
    "gpu_fp32_tflops": (66.9, "NVIDIA H100/H200 SXM datasheet: FP32 TFLOP/s (the float32 losses, k-means)"),
    "gpu_utilisation": (0.30, "assumed: 30% of the datasheet rate reached (model FLOP utilisation)"),
}
# Published sizes, used when a corpus has neither a manifest nor its id file (a fresh checkout):
# reader -> {subset (None: the whole corpus) -> (videos, source)}.
PUBLISHED_VIDEOS: dict[str, dict[str | None, tuple[int, str]]] = {
    "howto100m": {None: (1_220_000, "HowTo100M paper (Miech et al., ICCV 2019): 1.22M videos")},
    "youcook2": {"training": (1_333, "YouCook2 paper (Zhou et al., AAAI 2018): 1,333 training videos"),
                 "validation": (457, "YouCook2 paper (Zhou et al., AAAI 2018): 457 validation videos")},
}
# Fewer measured videos than this do not stand for a corpus.
MIN_LEDGER_VIDEOS = 10
# workflow/rules/download.smk: every download_shard job takes resources net=1.
NET_PER_DOWNLOAD_JOB = 1
# Snakemake reads the first of these that a profile directory holds.
PROFILE_FILES = ("config.v8+.yaml", "config.yaml")
HOURS_PER_DAY = 24
SECONDS_PER_HOUR = 3600


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
        return Rate(None, "not measured")

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
    spec = config["corpora"][corpus]
    if not id_file.exists():
        published = PUBLISHED_VIDEOS.get(spec["reader"], {}).get(spec.get("subset"))
        if published is None:
            return 0, f"no manifest and no id file ({id_file} not found)"
        videos, source = published
        if spec.get("limit") is not None:
            videos = min(videos, int(spec["limit"]))
        return videos, f"default ({source}; {id_file} not found)"
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
    if videos < MIN_LEDGER_VIDEOS:
        return {}
    return {"download_bytes_per_min": total_bytes / (total_seconds / 60), "mean_duration_min": total_seconds / 60 / videos}


def download_timing(results: Path, benchmarks: Path, corpora: list[str]) -> tuple[float, int, int] | None:
    """(wall seconds per video, videos, shard jobs) of the downloads this checkout already ran.

    A download ledger holds no job wall time (``duration`` is the video's length), so the time comes
    from the Snakemake ``benchmark:`` file of the same shard job (its ``s`` column, the job's wall
    time: sleeps, rate-limit cool-downs and transfers included) divided by the ledger's rows. Only
    ``corpora`` are read (the ones downloaded from URLs: a local corpus's rows cost no request). A
    shard rerun with ``update()`` records only the rerun's time against all its rows: an underestimate.
    """
    from mcnflow.core.ledger import read_ledger

    seconds = 0.0
    videos = jobs = 0
    for corpus in corpora:
        for ledger in sorted((results / "download" / corpus).glob("shard-*.tsv")):
            timing = benchmarks / "download" / corpus / ledger.name
            if not timing.is_file():
                continue
            runs = read_ledger(timing)  # a Snakemake benchmark file is a TSV with a header too
            rows = len(read_ledger(ledger))
            try:
                wall = float(runs[-1]["s"])  # the last run of the job (several rows only with repeat())
            except (IndexError, KeyError, ValueError):
                continue
            if rows and wall > 0:
                seconds += wall
                videos += rows
                jobs += 1
    if videos < MIN_LEDGER_VIDEOS:
        return None
    return seconds / videos, videos, jobs


def meta_model(entry: Mapping, training: Mapping, n_mels: int | None = None):
    """The experiment's MCN on the meta device (shapes only, no memory), built as the trainer builds it."""
    import torch

    from mcnflow.model.mcn import MCN

    departures = training.get("departures") or {}
    reconstruction = bool(((entry.get("losses") or {}).get("reconstruction") or {}).get("enabled", True))
    with torch.device("meta"):
        return MCN(entry["pairs"], entry.get("space", "shared"), embd_dim=training["embd_dim"],
                   video_dim=training["video_dim"], word_dim=training["word_dim"], recon_size=training["recon_size"],
                   reconstruction=reconstruction, va_space=entry.get("va_space", "fine"),
                   mask_text_padding=bool(departures.get("mask_text_padding", False)),
                   mask_audio_padding=bool(departures.get("mask_audio_padding", False)),
                   **({"audio_widths": training["audio_widths"]} if training.get("audio_widths") else {}),
                   **({"n_mels": int(n_mels)} if n_mels else {}))


def checkpoint_bytes(config: Mapping, experiment: str) -> tuple[int, int]:
    """(one epoch checkpoint: parameters, Adam's two moments, the k-means queues; model.pt: parameters)."""
    from mcnflow.core.config import deep_merge
    from mcnflow.training.trainer import queue_clips

    entry = config["experiments"][experiment]
    training = deep_merge(config["training"], entry.get("training") or {})
    model = meta_model(entry, training, config["features"]["audio"]["n_mels"])
    params = sum(p.numel() for p in model.parameters())
    spaces = len(model.spaces)
    queue = training["queue_batches"] * training["batch_size"] * queue_clips(training["n_pair"]) * training["embd_dim"]
    return int(params * 4 * 3 + spaces * queue * 4), int(params * 4)


def train_step_flops(entry: Mapping, training: Mapping, n_mels: int | None = None) -> tuple[float, float]:
    """(model FLOPs, float32 loss FLOPs) of one training step of ``batch_size x n_pair`` clips.

    The model part (forward and backward: the gated embedding units, ResDAVEnet, the text pool, the
    reconstruction decoders) is counted by torch's FlopCounterMode on the meta device, so it follows
    the code. The float32 part (the losses run outside autocast) is counted here: each MMS similarity
    matrix (forward and the gradients of both sides), the clustering term and the k-means, whose fit
    every ``queue_batches`` steps is counted at its ``kmeans_iters`` cap (it may stop earlier).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mcnflow.training.trainer import queue_clips

    model = meta_model(entry, training, n_mels)
    model.train()
    clips = int(training["batch_size"]) * int(training["n_pair"])
    with torch.device("meta"):
        # the batch MCN.encode reads (model.inputs.BATCH_KEYS), for the modalities this model has
        batch = {}
        if "video" in model.modalities:
            batch["video"] = torch.empty(clips, int(training["video_dim"]))
        if "audio" in model.modalities:
            batch["audio"] = torch.empty(clips, model.davenet.n_mels, int(training["audio_frames"]))
            batch["nframes"] = torch.full((clips,), int(training["audio_frames"]), dtype=torch.long)
        if "text" in model.modalities:
            batch["words"] = torch.empty(clips, int(training["max_words"]), int(training["word_dim"]))
            batch["mask"] = torch.ones(clips, int(training["max_words"]), dtype=torch.bool)
        with FlopCounterMode(display=False) as counter:
            output = model(batch)
            # any scalar of every output has the real loss's backward graph (FLOPs depend on shapes only)
            total = sum(e.float().sum() for per in output.embeddings.values() for e in per.values())
            total = total + sum(r.float().sum() for per in output.reconstructions.values() for r in per.values())
            total.backward()
    model_flops = float(counter.get_total_flops())

    losses = entry.get("losses") or {}
    dim, clusters = int(training["embd_dim"]), int(training["clusters"])
    float32 = 0.0
    if (losses.get("mms") or {}).get("enabled", True):
        # S = X Y^T (2 N^2 D) and the gradients of X and Y (2 N^2 D each), per pair
        float32 += len(model.pairs) * 3 * 2 * clips * clips * dim
    if (losses.get("clustering") or {}).get("enabled", True):
        queue_batches, iters = int(training["queue_batches"]), int(training["kmeans_iters"])
        points = queue_batches * int(training["batch_size"]) * queue_clips(int(training["n_pair"])) + clips
        for space in model.spaces:
            modalities = len(model.space_modalities(space))
            float32 += modalities * 2 * 2 * clips * clusters * dim  # scores E C^T and the gradient of E
            float32 += (1 - 1 / queue_batches) * 2 * clips * clusters * dim  # the batch's labels between fits
            # a fit: per round, similarities to the centroids and the one-hot mean (2 P C D each)
            float32 += iters * 2 * 2 * points * clusters * dim / queue_batches
    return model_flops, float32


# --- the download's wall-clock ---------------------------------------------------------------------

def read_profile(profile: Path) -> tuple[dict, Path]:
    """A Snakemake profile directory's settings (its config.v8+.yaml or config.yaml) and that file."""
    for name in PROFILE_FILES:
        path = profile / name
        if path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(data, Mapping):
                raise ConfigError(f"{path}: expected a mapping of Snakemake options")
            return dict(data), path
    raise ConfigError(f"--profile {profile}: no {' or '.join(PROFILE_FILES)} there")


def profile_resources(data: Mapping) -> dict[str, str]:
    """The profile's global ``resources``: a mapping ({net: 4}) or Snakemake's list form ([net=2])."""
    resources = data.get("resources") or {}
    if isinstance(resources, Mapping):
        return {str(key): str(value) for key, value in resources.items()}
    items = [resources] if isinstance(resources, str) else list(resources)
    return dict(str(item).split("=", 1) for item in items if "=" in str(item))


def download_concurrency(profile: Path, config: Mapping | None = None) -> tuple[int, str]:
    """(download shard jobs at once, where that came from): the smallest of the profile's ``net`` over
    what one download_shard takes, its ``jobs``, and the routes' resources (workflow/rules/common.smk:
    one resource ``route_<n>`` per route of ``download.routes``, ``download.jobs_per_route`` each unless
    the profile sets ``route_<n>`` itself)."""
    data, path = read_profile(profile)
    resources = profile_resources(data)
    limits, named = [], []
    net = resources.get("net")
    if net is not None:
        limits.append(int(net) // NET_PER_DOWNLOAD_JOB)
        named.append(f"{path} resources net: {net}")
    jobs = data.get("jobs")
    if isinstance(jobs, int) or (isinstance(jobs, str) and jobs.isdigit()):
        limits.append(int(jobs))
        named.append(f"jobs: {jobs}")
    per_route = (config or {}).get("download", {}).get("jobs_per_route")
    if per_route is not None:
        routes = len(config["download"].get("routes") or []) or 1
        caps = [int(resources.get(f"route_{number}", per_route)) for number in range(routes)]
        limits.append(sum(caps))
        overridden = [f"route_{n}: {resources[f'route_{n}']}" for n in range(routes) if f"route_{n}" in resources]
        named.append(f"{routes} route(s) x download.jobs_per_route {per_route}"
                     + (f" ({path} sets {', '.join(overridden)})" if overridden else ""))
    if not limits:
        return 1, f"{path} sets neither net nor jobs: assumed 1 (snakemake --cores decides)"
    return max(1, min(limits)), "the smallest of " + "; ".join(named)


def downloads_per_video(fmt: str) -> int:
    """Files yt-dlp downloads per video for ``download.format``: its first choice's ``+``-joined parts
    (bv*+ba: video and audio, merged afterwards). yt-dlp sleeps before each of them."""
    first = re.sub(r"\[[^\]]*\]", "", fmt.split("/", 1)[0])  # filters in [...] are not parts
    return first.count("+") + 1


def seconds_per_video(config: Mapping, rates: Rates) -> tuple[float, str]:
    """(mean wall seconds one shard job spends per video, how), from yt-dlp's sleeps and stated rates.

    A surviving video: the sleep before each downloaded file (uniform between download.sleep_interval
    and max_sleep_interval), download.sleep_requests before each request, download.sleep_subtitles
    before each caption track, extraction and the transfer. A gone video fails at extraction: its
    requests and the extraction only. Cool-downs after rate limits are not counted.
    """
    download = config["download"]
    cookies = "_cookies" if download.get("cookies_file") else ""
    files = downloads_per_video(download["format"])
    low = float(download["sleep_interval"])
    sleep = (low + max(low, float(download.get("max_sleep_interval") or 0))) / 2
    requests = rates.get(f"requests_per_video{cookies}")
    tracks = len(download["caption_languages"]) if download["captions"] else 0
    extract = rates.get("extract_s_per_video")
    minutes, per_min, per_s = rates.get("mean_duration_min"), rates.get("download_bytes_per_min"), rates.get("download_bytes_per_s")
    transfer = minutes.value * per_min.value / per_s.value
    asked = requests.value * float(download["sleep_requests"])
    ok = files * sleep + asked + tracks * float(download["sleep_subtitles"]) + extract.value + transfer
    gone = asked + extract.value
    survival = rates.get("survival")
    mean = survival.value * ok + (1 - survival.value) * gone
    how = (f"{mean:.1f} s per video: {survival.value:.0%} surviving at {ok:.1f} s = {files} file(s) x {sleep:.1f} s "
           f"mean sleep (download.sleep_interval..max_sleep_interval) + {requests.value:.2f} requests ({requests.source}) "
           f"x {float(download['sleep_requests']):g} s (download.sleep_requests) + {tracks} caption track(s) (download.caption_languages, "
           f"each assumed present) x {float(download['sleep_subtitles']):g} s (download.sleep_subtitles) + {extract.value:g} s extraction "
           f"({extract.source}) + {transfer:.1f} s transfer ({minutes.value:g} min x {per_min.value / 1e6:.1f} MB/min at "
           f"{per_s.value / 1e6:g} MB/s: {per_s.source}); gone videos {gone:.1f} s (requests and extraction only); "
           "rate-limit cool-downs not counted")
    return mean, how


@dataclass
class DownloadTime:
    videos: int                 # videos asked (every row of the URL corpora: gone ones cost requests too)
    shards: int
    seconds_per_video: float    # one shard job's wall seconds per video
    per_video: str              # how seconds_per_video came about
    concurrency: int            # shard jobs at once (capped by the shards there are)
    concurrency_source: str
    routes: int
    routes_source: str
    route_rate: Rate            # videos/h one route may ask
    sleep_bound: float = 0.0    # videos/h: jobs x what one job's sleeps allow
    route_bound: float = 0.0    # videos/h: routes in use x route_rate
    jobs_per_route_needed: int = 0  # jobs on one route that reach its rate (more do not help)

    @property
    def throughput(self) -> float:
        return min(self.sleep_bound, self.route_bound)

    @property
    def binding(self) -> str:
        if self.sleep_bound == self.route_bound:
            return "both limits alike"
        return "sleeps x concurrency" if self.sleep_bound < self.route_bound else "per-route rate"

    @property
    def days(self) -> float:
        return self.videos / self.throughput / HOURS_PER_DAY if self.videos else 0.0


def download_wallclock(config: Mapping, rates: Rates, counts: Mapping[str, int], profile: Path) -> DownloadTime:
    """How long the URL corpora take to download with the profile's concurrency and the routes' rate."""
    url_corpora = [c for c in config["corpora"] if config["corpora"][c]["source"] == "url"]
    videos = sum(counts.get(c, 0) for c in url_corpora)
    shards = sum(math.ceil(counts.get(c, 0) / int(config["shard_size"])) for c in url_corpora)
    jobs, jobs_source = download_concurrency(profile, config)
    if 0 < shards < jobs:
        jobs, jobs_source = shards, f"{jobs_source}, capped by the {shards} shard(s) there are"
    measured = rates.get("download_s_per_video")
    if measured.value is not None:
        per_video, how = measured.value, f"{measured.value:.1f} s per video ({measured.source})"
    else:
        per_video, how = seconds_per_video(config, rates)
    routes_list = config["download"].get("routes") or []
    routes = len(routes_list) or 1
    routes_source = (f"download.routes: {routes}" if routes_list
                     else "download.routes empty: one route, download.proxy / source_address or this machine's own")
    # the yt-dlp wiki: ~300 videos/h per guest session, ~2000 logged in (the schema's default is the former)
    route_rate = Rate(float(config["download"]["route_videos_per_hour"]), "config download.route_videos_per_hour"
                      + ("; cookies_file is set: a logged-in session allows ~2000" if config["download"].get("cookies_file")
                         else ""))
    result = DownloadTime(videos, shards, per_video, how, jobs, jobs_source, routes, routes_source, route_rate)
    job_rate = SECONDS_PER_HOUR / per_video
    result.sleep_bound = jobs * job_rate
    # a job asks through one route at a time: fewer jobs than routes leave routes idle
    # (jobs assumed spread evenly over the routes, as shard N % routes spreads them)
    result.route_bound = min(routes, jobs) * route_rate.value
    result.jobs_per_route_needed = math.ceil(route_rate.value / job_rate)
    return result


# --- training time ---------------------------------------------------------------------------------

@dataclass
class TrainTime:
    experiment: str
    seeds: int
    steps: int              # over all its seeds
    flops: float            # per step: model + float32 losses
    step_s: float
    label: str              # GPU-measured | CPU-measured | FLOP estimate
    basis: str

    @property
    def hours(self) -> float:
        return self.steps * self.step_s / SECONDS_PER_HOUR


def _measured(rates: Rates, key: str) -> float | None:
    value = rates.measured.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def step_time(model_flops: float, float32_flops: float, amp: bool, rates: Rates) -> tuple[float, str, str]:
    """(seconds per step, label, basis): a measured step time scaled by this step's FLOPs over the
    measured one's (a GPU measurement first, then a CPU one), else the FLOPs at the GPU's datasheet rate."""
    flops = model_flops + float32_flops
    for kind, label in (("gpu", "GPU-measured"), ("cpu", "CPU-measured")):
        seconds = _measured(rates, f"train_step_s_{kind}")
        if seconds is None:
            continue
        machine = rates.measured.get(f"train_step_machine_{kind}") or rates.machine
        at = _measured(rates, f"train_step_flops_{kind}")
        note = " (a GPU's step is far shorter: run benchmarks/gpu_check.sh)" if kind == "cpu" else ""
        if at is None:
            return seconds, label, f"{label}: {seconds:.4g} s/step on {machine}, its FLOPs not recorded: not scaled{note}"
        return (seconds * flops / at, label,
                f"{label}: {seconds:.4g} s/step on {machine} at {at / 1e12:,.3g} TFLOP/step, scaled by each "
                f"experiment's TFLOP/step{note}")
    seconds = _measured(rates, "train_step_s")
    if seconds is not None:
        # gpu_check.sh's earlier writer: bench_train_step.py with --device cuda, sizes not recorded
        return (seconds, "GPU-measured", f"GPU-measured: {seconds:.4g} s/step on {rates.machine} by gpu_check.sh "
                                         "(config.yaml sizes, 2D only; FLOPs not recorded: not scaled)")
    fp16, fp32, share = rates.get("gpu_fp16_tflops"), rates.get("gpu_fp32_tflops"), rates.get("gpu_utilisation")
    model_rate = fp16 if amp else fp32
    seconds = (model_flops / (model_rate.value * 1e12 * share.value)
               + float32_flops / (fp32.value * 1e12 * share.value))
    return (seconds, "FLOP estimate",
            f"FLOP estimate: the model's FLOPs (FlopCounterMode) at {model_rate.value:g} TFLOP/s "
            f"{'FP16 under AMP' if amp else 'FP32'} ({model_rate.source}), the float32 losses and k-means at "
            f"{fp32.value:g} TFLOP/s ({fp32.source}), x {share.value:.0%} ({share.source}); compute only: "
            "the loader is assumed to keep up")


def train_times(config: Mapping, rates: Rates, train_videos: int) -> list[TrainTime]:
    """Steps and GPU-hours of every experiment, summed over its seeds (one branch per seed)."""
    from mcnflow.core.plan import Plan

    plan = Plan(config)
    times = []
    for name in config["experiments"]:
        seeds = plan.seeds(name)
        entry = plan.experiment_settings(name, seeds[0])
        training = entry["training"]
        # as the trainer: whole batches per epoch (one smaller batch when there are fewer videos than a batch)
        per_epoch = 0 if not train_videos else max(1, train_videos // int(training["batch_size"]))
        if train_videos and train_videos < int(training["batch_size"]):
            training = {**training, "batch_size": train_videos}
        model_flops, float32_flops = train_step_flops(entry, training, config["features"]["audio"]["n_mels"])
        seconds, label, basis = step_time(model_flops, float32_flops, bool(training["amp"]), rates)
        times.append(TrainTime(name, len(seeds), len(seeds) * int(training["epochs"]) * per_epoch,
                               model_flops + float32_flops, seconds, label, basis))
    return times


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
    from mcnflow.core.streams import stream, stream_dim

    made = Plan(config).media_streams()
    video3d = "video3d" in made
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
    # HDF5: float16 rows (store.py layout) of each media stream; index and attributes are small
    for name in made:
        rows = float(stream(name).rate)
        dim = stream_dim(stream(name), config)
        lines.append(Line(f"{name} features", None, None, video_seconds * rows * dim * 2,
                          f"float16 {dim} x {rows:g} rows/s"))
    text = rates.get("text_bytes_per_video")
    lines.append(Line("text features", None, None, kept * text.value, f"{text.value / 1e3:.0f} kB/video ({text.source})"))

    # training: one branch per (experiment, seed)
    training = config["training"]
    train = train_times(config, rates, int(surviving(config["train_corpus"])))
    branches = [(t.experiment, t.seeds) for t in train]
    lines.append(Line("train", None, sum(t.hours for t in train), 0.0,
                      f"{sum(t.steps for t in train):,} steps over {sum(t.seeds for t in train)} branch(es); "
                      f"{', '.join(sorted({t.label for t in train}))}: per experiment below"
                      + ("; CPU-measured hours are that CPU's, a GPU's are far fewer"
                         if any(t.label == "CPU-measured" for t in train) else "")))
    keep_checkpoints = training.get("keep_checkpoints") or int(training["epochs"])
    checkpoint_total = 0.0
    for name, n in branches:
        epoch_checkpoint, model_file = checkpoint_bytes(config, name)
        checkpoint_total += n * (keep_checkpoints * epoch_checkpoint + model_file)
    lines.append(Line("checkpoints", None, None, checkpoint_total,
                      f"{keep_checkpoints} epoch checkpoint(s) + model.pt per branch (parameters, Adam moments, "
                      "k-means queues)"))
    summary = {"videos": videos, "featured": featured, "kept": kept, "minutes": minutes, "survival": survival,
               "hours": video_minutes / 60, "train": train}
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


def _render_download(download: DownloadTime, profile: Path) -> list[str]:
    out = [f"download wall-clock (profile {profile}): {download.days:,.1f} days for {download.videos:,} videos "
           f"in {download.shards:,} shard(s)"]
    if not download.videos:
        return out
    out.append(f"  one job: {download.per_video}")
    out.append(f"  sleeps x concurrency: {download.concurrency} shard job(s) at once ({download.concurrency_source}) "
               f"x {SECONDS_PER_HOUR / download.seconds_per_video:,.1f} videos/h each = {download.sleep_bound:,.0f} videos/h")
    out.append(f"  per-route rate: {min(download.routes, download.concurrency)} route(s) in use ({download.routes_source}) "
               f"x {download.route_rate.value:,.0f} videos/h ({download.route_rate.source}) = {download.route_bound:,.0f} videos/h")
    out.append(f"  binding: {download.binding}: {download.throughput:,.0f} videos/h; {download.jobs_per_route_needed} "
               f"job(s) per route reach its rate (download.jobs_per_route, with net and jobs to match), more do not "
               "help: then add routes or a logged-in session")
    return out


def _render_train(train: list[TrainTime]) -> list[str]:
    # a CPU-measured step gives hours of that CPU, not GPU-hours: the header says so
    unit = "hours" if any(t.label == "CPU-measured" for t in train) else "GPU-h"
    out = [f"training {'hours' if unit == 'hours' else 'GPU-hours'} per experiment (summed over its seeds; "
           "one branch per seed):"]
    out += [f"  {basis}" for basis in dict.fromkeys(t.basis for t in train)]
    out.append(f"  {'experiment':<22}{'seeds':>6}{'steps':>12}{'TFLOP/step':>12}{'s/step':>9}{unit:>10}  label")
    for t in train:
        out.append(f"  {t.experiment:<22}{t.seeds:>6}{t.steps:>12,}{t.flops / 1e12:>12,.1f}{t.step_s:>9.3f}"
                   f"{_fmt_hours(t.hours):>10}  {t.label}")
    out.append(f"  {'total':<22}{sum(t.seeds for t in train):>6}{sum(t.steps for t in train):>12,}{'':>21}"
               f"{_fmt_hours(sum(t.hours for t in train)):>10}")
    return out


def render(lines: list[Line], summary: Mapping, counts: Mapping[str, int], sources: Mapping[str, str],
           download: DownloadTime | None = None, profile: Path | None = None) -> str:
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
    total_gpu = sum(line.gpu_hours or 0.0 for line in lines)
    out.append(f"{'total':<20}{_fmt_hours(total_cpu):>12}{_fmt_hours(total_gpu):>10}"
               f"{_fmt_bytes(sum(line.bytes for line in lines)):>14}")
    if download is not None:
        out += ["", *_render_download(download, profile)]
    if summary.get("train"):
        out += ["", *_render_train(summary["train"])]
    return "\n".join(out)


# --- planning power of a finished run --------------------------------------------------------------

def render_power(rows: list[dict[str, str]], source: Path) -> list[str]:
    """power.csv of a finished run (``mcnflow summarize``): per benchmark, the smallest true difference in
    its primary metric that a run like it detects, now and with more seeds or queries (what to spend
    GPU-days on before spending them)."""
    scaled = [c for c in rows[0] if re.fullmatch(r"mdd_(seeds|queries)_x\d+", c)]
    heads = [re.sub(r"mdd_(seeds|queries)_x(\d+)", r"\2x \1", c) for c in scaled]
    first = rows[0]
    out = [f"minimum detectable difference in each primary metric ({source}: {float(first['power']):.0%} power, "
           f"two-sided at {float(first['level']):.3g}):",
           f"{'benchmark':<24}{'metric':<24}{'seeds x queries':>16}{'now':>9}" + "".join(f"{h:>12}" for h in heads)]
    for row in rows:
        cells = [_fmt_mdd(row["mdd"]), *(_fmt_mdd(row[c]) for c in scaled)]
        size = f"{row['n_seeds']} x {float(row['n_queries']):g}"
        out.append(f"{row['benchmark']:<24}{row['metric']:<24}{size:>16}{cells[0]:>9}"
                   + "".join(f"{c:>12}" for c in cells[1:]))
    if any(row["n_seeds"] == "1" for row in rows):
        out.append("(one seed: the seed variance is unknown, so more seeds cannot be planned; docs/statistics.md)")
    return out


def _fmt_mdd(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return "-"
    return f"{number:.2f}" if math.isfinite(number) else "-"


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
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, metavar="DIR",
                        help=f"the Snakemake profile the run uses: its `resources: net:` is how many download "
                             f"shards run at once (default {DEFAULT_PROFILE})")
    parser.add_argument("--benchmarks", type=Path, default=DEFAULT_BENCHMARKS, metavar="DIR",
                        help="the jobs' Snakemake benchmark files: with the download ledgers they give the "
                             f"measured seconds per video (default {DEFAULT_BENCHMARKS})")


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
    url_corpora = [c for c in config["corpora"] if config["corpora"][c]["source"] == "url"]
    timing = download_timing(args.results, args.benchmarks, url_corpora)
    if timing is not None:
        seconds, videos, jobs = timing
        rates.overrides["download_s_per_video"] = Rate(seconds, (
            f"ledgers: {videos:,} videos in {jobs} shard job(s), the jobs' wall time in {args.benchmarks}/download "
            f"over the rows of {args.results}/download; rate-limit cool-downs included"))
    counts, sources = {}, {}
    for corpus in config["corpora"]:
        counts[corpus], sources[corpus] = count_videos(config, corpus, args.results)
    lines, summary = estimate(config, rates, counts)
    download = download_wallclock(config, rates, counts, args.profile)
    print(render(lines, summary, counts, sources, download, args.profile))
    power = read_power(args.results / "power.csv")  # a finished run's planning power, when there is one
    if power:
        print("\n" + "\n".join(render_power(power, args.results / "power.csv")))
    return 0
