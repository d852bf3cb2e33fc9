"""``mcnflow estimate``: the download's days and training's GPU-hours, checked against hand arithmetic.

What is proven here:
* the download wall-clock: yt-dlp's sleeps per video x the profile's concurrency against the routes'
  rate, whichever binds, from stated rates; and from measured seconds per video (a download ledger's
  rows over its shard job's Snakemake benchmark wall time) when those files exist;
* training: the FLOPs of one step counted on a tiny MCN equal a count by hand; a measured step time is
  scaled by each experiment's FLOPs and summed over its seeds, labelled GPU- or CPU-measured; without
  a measurement the FLOPs at the stated datasheet rate give a "FLOP estimate";
* disk: downloads, normalized videos and every feature modality equal the hand-computed bytes;
* the profile's concurrency (net over what one download job takes, capped by jobs), both forms.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mcnflow import cli
from mcnflow.core.config import ConfigError, load_config
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, write_ledger
from mcnflow.estimate import (Rate, Rates, download_concurrency, download_timing, download_wallclock, downloads_per_video,
                              estimate, step_time, train_step_flops)

REPO = Path(__file__).resolve().parents[1]
HOUR = 3600


def profile(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "profile"
    directory.mkdir(exist_ok=True)
    (directory / "config.yaml").write_text(text)
    return directory


# --- the download's wall-clock --------------------------------------------------------------------------

DOWNLOAD = {"format": "bv*[height<={max_height}]+ba/b[height<={max_height}]", "captions": True,
            "caption_languages": ["en-orig", "en"], "sleep_interval": 10.0, "max_sleep_interval": 20.0,
            "sleep_requests": 1.0, "sleep_subtitles": 5.0, "route_videos_per_hour": 100, "cookies_file": None,
            "routes": [], "jobs_per_route": 8, "canary": {"expected_survival": 0.8}}
# every rate the sleeps' arithmetic reads, fixed (no default takes part)
RATES = {"requests_per_video": 4, "extract_s_per_video": 2, "download_bytes_per_s": 1e6,
         "download_bytes_per_min": 6e6, "mean_duration_min": 5, "machine": "test"}
COUNTS = {"howto100m": 2500, "youcook2": 500, "msrvtt": 1000}  # msrvtt is local: never downloaded


def test_download_days_from_the_sleeps_against_one_route(tmp_path):
    config = load_config([REPO / "config.yaml"], {"download": DOWNLOAD, "shard_size": 1000})
    result = download_wallclock(config, Rates(RATES, config), COUNTS, profile(tmp_path, "resources: {net: 3}\njobs: 100\n"))
    # a surviving video: 2 files (bv*+ba) x 15 s mean sleep + 4 requests x 1 s + 2 caption tracks x 5 s
    # + 2 s extraction + 5 min x 6 MB/min at 1 MB/s = 30 + 4 + 10 + 2 + 30 = 76 s; a gone one: 4 + 2 = 6 s
    per_video = 0.8 * 76 + 0.2 * 6
    assert per_video == pytest.approx(62.0)
    assert result.seconds_per_video == pytest.approx(per_video)
    assert (result.videos, result.shards, result.concurrency, result.routes) == (3000, 4, 3, 1)  # 3 + 1 shards
    assert result.sleep_bound == pytest.approx(3 * HOUR / 62)     # 174.2 videos/h
    assert result.route_bound == pytest.approx(100)                # one route x 100 videos/h
    assert result.binding == "per-route rate"
    assert result.days == pytest.approx(3000 / 100 / 24)           # 1.25 days
    assert result.jobs_per_route_needed == 2                       # ceil(100 / (3600 / 62)) = ceil(1.72)


def test_download_days_with_two_routes_are_bound_by_the_sleeps(tmp_path):
    routes = [{"proxy": "socks5://a:1080"}, {"source_address": "10.0.0.2"}]
    config = load_config([REPO / "config.yaml"], {"download": {**DOWNLOAD, "routes": routes}, "shard_size": 1000})
    result = download_wallclock(config, Rates(RATES, config), COUNTS, profile(tmp_path, "resources: {net: 3}\n"))
    assert result.routes == 2 and result.route_bound == pytest.approx(200)
    assert result.binding == "sleeps x concurrency"
    # 3 jobs x 3600 / 62 s = 174.19 videos/h: 3000 videos in 3000 * 62 / (3 * 3600) h
    assert result.days == pytest.approx(3000 * 62 / (3 * HOUR) / 24)   # 0.7176 days
    assert result.jobs_per_route_needed == 2                            # per route: ceil(100 / 58.06)


def test_routes_beyond_the_concurrency_stay_idle(tmp_path):
    routes = [{"proxy": f"socks5://r{i}:1080"} for i in range(3)]
    config = load_config([REPO / "config.yaml"], {"download": {**DOWNLOAD, "routes": routes, "sleep_interval": 0.0,
                                                               "max_sleep_interval": 0.0, "captions": False},
                                                  "shard_size": 1000})
    result = download_wallclock(config, Rates(RATES, config), COUNTS, profile(tmp_path, "resources: {net: 2}\n"))
    # no file or caption sleeps: 0.8 x (4 + 2 + 30) + 0.2 x 6 = 30 s per video
    assert result.seconds_per_video == pytest.approx(30.0)
    # 2 jobs use 2 of the 3 routes: 2 x 100 videos/h, below the sleeps' 2 x 3600 / 30 s = 240 videos/h
    assert result.sleep_bound == pytest.approx(240)
    assert result.route_bound == pytest.approx(200) and result.binding == "per-route rate"
    assert result.days == pytest.approx(3000 / 200 / 24)


def test_download_concurrency_is_capped_by_the_shards_there_are(tmp_path):
    config = load_config([REPO / "config.yaml"], {"download": DOWNLOAD, "shard_size": 1000})
    result = download_wallclock(config, Rates(RATES, config), {"howto100m": 1500, "youcook2": 0, "msrvtt": 0},
                                profile(tmp_path, "resources: {net: 8}\n"))
    assert (result.shards, result.concurrency) == (2, 2)


def test_jobs_per_route_bind_before_the_profile(tmp_path):
    routes = [{"proxy": "socks5://a:1080"}, {"source_address": "10.0.0.2"}]
    config = load_config([REPO / "config.yaml"], {"download": {**DOWNLOAD, "routes": routes, "jobs_per_route": 1},
                                                  "shard_size": 1000})
    result = download_wallclock(config, Rates(RATES, config), COUNTS, profile(tmp_path, "resources: {net: 3}\n"))
    # 2 routes x 1 job < net 3: 2 jobs x 3600 / 62 s = 116 videos/h, below the routes' 2 x 100
    assert result.concurrency == 2 and "download.jobs_per_route 1" in result.concurrency_source
    assert result.days == pytest.approx(3000 * 62 / (2 * HOUR) / 24)
    assert result.binding == "sleeps x concurrency"
    # the profile may raise one route's resource (what --resources route_0=N does on the command line)
    value, source = download_concurrency(profile(tmp_path, "resources: {net: 9, route_0: 4}\n"), config)
    assert value == 4 + 1 and "route_0: 4" in source


def test_profile_concurrency_in_both_resource_forms(tmp_path):
    assert download_concurrency(profile(tmp_path, "resources:\n  - gpu=1\n  - net=2\n"))[0] == 2
    assert download_concurrency(profile(tmp_path, "resources: {net: 40}\njobs: 16\n"))[0] == 16
    value, source = download_concurrency(profile(tmp_path, "keep-going: true\n"))
    assert value == 1 and "assumed 1" in source
    slurm = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert download_concurrency(REPO / "profiles/slurm")[0] == min(int(slurm["resources"]["net"]), int(slurm["jobs"]))
    with pytest.raises(ConfigError, match="no config"):
        download_concurrency(tmp_path / "missing")


def test_downloads_per_video_counts_the_first_choice_parts():
    assert downloads_per_video("bv*[height<=360]+ba/b[height<=360]/bv*+ba/b") == 2
    assert downloads_per_video("b[height<=360]/bv*+ba") == 1
    assert downloads_per_video("bv[format_note*=a+b]+ba") == 2  # a + inside a filter is not a part


# --- training -------------------------------------------------------------------------------------------

TINY = {"embd_dim": 8, "video_dim": 6, "word_dim": 5, "max_words": 3, "recon_size": 4, "batch_size": 2, "n_pair": 3,
        "audio_frames": 16, "clusters": 2, "kmeans_iters": 7, "queue_batches": 5}
ON = {"enabled": True, "weight": 1.0}


def test_train_step_flops_of_a_tiny_model_match_a_count_by_hand():
    entry = {"pairs": ["tv"], "space": "shared", "losses": {"mms": ON, "clustering": ON, "reconstruction": ON}}
    model, float32 = train_step_flops(entry, TINY)
    n = 2 * 3  # clips per step
    # forward, 2 x rows x in x out per linear: video GEU 6->8 and its gating 8->8; text word projection
    # 5->8 on n x 3 word slots, text GEU 8->8 + gating 8->8; decoders video 8->4->6, text 8->4->8
    forward = 2 * n * (6 * 8 + 8 * 8) + 2 * n * 3 * 5 * 8 + 2 * n * (8 * 8 + 8 * 8) + 2 * n * (8 * 4 + 4 * 6 + 8 * 4 + 4 * 8)
    assert forward == 5760
    # backward: every weight's gradient costs its forward again, every input's gradient too, except the
    # two layers that read the batch (no gradient for the data): 2 x forward - (video fc + word projection)
    backward = 2 * forward - (2 * n * 6 * 8 + 2 * n * 3 * 5 * 8)
    assert model == forward + backward == 15264
    mms = 6 * n * n * 8                                    # one pair: S = X Y^T and both gradients
    clustering = 2 * 4 * n * 2 * 8                         # two modalities: scores and their gradient
    labels = (1 - 1 / 5) * 2 * n * 2 * 8                   # the batch's labels between two fits
    points = 5 * 2 * 1 + n                                 # the queue (5 batches x 2 videos x 1 of 3 clips) + the batch
    fits = 7 * 4 * points * 2 * 8 / 5                      # 7 rounds of (similarities + one-hot mean), every 5 steps
    assert float32 == pytest.approx(mms + clustering + labels + fits) == 4083.2


def test_step_time_labels_and_arithmetic():
    model, float32 = 15264.0, 4083.2
    flop_rates = {"gpu_fp16_tflops": 100, "gpu_fp32_tflops": 10, "gpu_utilisation": 0.5}
    seconds, label, basis = step_time(model, float32, True, Rates(flop_rates))
    assert label == "FLOP estimate" and "30%" not in basis and "50%" in basis
    assert seconds == pytest.approx(model / (100e12 * 0.5) + float32 / (10e12 * 0.5))
    seconds, _, _ = step_time(model, float32, False, Rates(flop_rates))  # no AMP: the model at the FP32 rate
    assert seconds == pytest.approx((model + float32) / (10e12 * 0.5))
    # a CPU measurement alone is used and says so, scaled by the FLOP ratio
    cpu = {"train_step_s_cpu": 2.0, "train_step_flops_cpu": (model + float32) / 4, "train_step_machine_cpu": "vm (x86_64)"}
    seconds, label, basis = step_time(model, float32, True, Rates(cpu))
    assert (seconds, label) == (pytest.approx(8.0), "CPU-measured") and "vm (x86_64)" in basis
    # a GPU measurement wins over a CPU one
    gpu = {**cpu, "train_step_s_gpu": 0.25, "train_step_flops_gpu": model + float32, "train_step_machine_gpu": "h (H100)"}
    assert step_time(model, float32, True, Rates(gpu))[:2] == (pytest.approx(0.25), "GPU-measured")
    # gpu_check.sh's earlier key (always --device cuda): used as it is
    assert step_time(model, float32, True, Rates({"train_step_s": 0.3}))[:2] == (0.3, "GPU-measured")


# --- the whole command on a fixed ledger and fixed rates ----------------------------------------------

def write_manifest(path: Path, videos: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("video_id\tsource\n" + "".join(f"v{i:010d}\tx\n" for i in range(videos)))


def write_download_shard(results: Path, benchmarks: Path, corpus: str, shard: str, rows: int, wall_s: float | None):
    ledger = results / "download" / corpus / f"shard-{shard}.tsv"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    # every row ok: 3 MB for a 60 s video
    write_ledger(ledger, [{"video_id": f"{corpus}{shard}{i:04d}", "status": "ok", "message": "", "bytes": 3_000_000,
                           "duration": 60.0, "path": "x.mp4", "captions_path": "", "attempts": 1}
                          for i in range(rows)], DOWNLOAD_COLUMNS)
    if wall_s is not None:
        timing = benchmarks / "download" / corpus / f"shard-{shard}.tsv"
        timing.parent.mkdir(parents=True, exist_ok=True)
        # Snakemake's benchmark file: s is the job's wall time in seconds
        timing.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                          f"{wall_s}\t0:20:00\t100\t200\t90\t95\t0\t0\t5\t60\n")


@pytest.mark.slow
def test_estimate_days_gpu_hours_and_disk_on_a_fixed_ledger_and_rates(tmp_path, capsys):
    from mcnflow.core.plan import Plan

    results, benchmarks = tmp_path / "results", tmp_path / "bench"
    write_manifest(results / "manifest" / "howto100m.tsv", 2400)
    write_manifest(results / "manifest" / "youcook2.tsv", 480)
    write_manifest(results / "manifest" / "msrvtt.tsv", 100)
    write_download_shard(results, benchmarks, "howto100m", "00000", 20, 1200.0)   # 60 s per video
    write_download_shard(results, benchmarks, "howto100m", "00001", 5, None)      # no timing: left out of the rate
    write_download_shard(results, benchmarks, "msrvtt", "00000", 100, 1.0)        # local files: left out of the rate
    assert download_timing(results, benchmarks, ["howto100m", "youcook2"]) == (60.0, 20, 1)

    override = tmp_path / "override.yaml"
    # every setting the hand arithmetic below reads, pinned (config.yaml may change)
    override.write_text(yaml.safe_dump({
        "shard_size": 1000, "experiments": {"tv": {"seeds": [1, 2, 3]}}, "seeds": [1],
        "training": {"batch_size": 128, "epochs": 30, "video_features": ["2d", "3d"], "video_dim": 4096},
        "normalize": {"keep": True},
        "features": {"video": {"fps": 1}, "video3d": {"fps": 24, "clip_frames": 16}, "audio": {"n_mels": 40, "hop_ms": 10}},
        "download": {"route_videos_per_hour": 300, "routes": [], "jobs_per_route": 2,
                     "canary": {"expected_survival": 0.75}}}))
    config_files = [REPO / "config.yaml", override]
    config = load_config(config_files)
    reference = Plan(config).experiment_settings("tv_ta_va", 1)
    reference_flops = sum(train_step_flops(reference, reference["training"], config["features"]["audio"]["n_mels"]))
    rates = tmp_path / "rates.yaml"
    rates.write_text(yaml.safe_dump({
        "machine": "test", "normalized_bytes_per_min": 2e6, "text_bytes_per_video": 5000,
        # measured at tv_ta_va's own size: its step time is used as it is, the others' scale by FLOPs
        "train_step_s_gpu": 0.5, "train_step_flops_gpu": reference_flops, "train_step_machine_gpu": "gpu-host (H100)"}))
    run = tmp_path / "profile"
    run.mkdir()
    (run / "config.yaml").write_text("resources: {net: 2}\n")
    assert cli.main(["estimate", "--config", *map(str, config_files), "--rates", str(rates), "--results", str(results),
                     "--benchmarks", str(benchmarks), "--profile", str(run)]) == 0
    text = capsys.readouterr().out

    # download: 2 jobs (net 2, and 1 route x 2) x 3600 / 60 s = 120 videos/h (< 300 per route): 2,880 videos in one day
    assert "download wall-clock" in text and "1.0 days for 2,880 videos in 4 shard(s)" in text, text
    assert "binding: sleeps x concurrency: 120 videos/h" in text
    assert "ledgers: 20 videos in 1 shard job(s)" in text

    # the same numbers from the functions the command prints
    measured = Rates(yaml.safe_load(rates.read_text()), config)
    measured.overrides.update({"download_bytes_per_min": Rate(3e6, "ledgers"), "mean_duration_min": Rate(1.0, "ledgers")})
    counts = {"howto100m": 2400, "youcook2": 480, "msrvtt": 100}
    lines, summary = estimate(config, measured, counts)
    by_stage = {line.stage: line for line in lines}

    # disk: 75% of the downloaded videos survive; 1 min each (the ledger's 60 s videos)
    downloaded = (2400 + 480) * 0.75
    kept = downloaded + 100                       # + the local MSR-VTT clips, all there
    seconds = kept * 60
    disk = {"download": downloaded * 3e6,         # the ledger's 3 MB per minute
            "normalized videos": kept * 2e6,      # 2 MB per minute (rates file)
            "video features": seconds * 1 * 2048 * 2,              # float16 2048 x 1 row/s
            "audio features": seconds * 40 * 2 * 100,             # float16 40 mels x 100 frames/s
            "video3d features": seconds * 24 / 16 * 2048 * 2,     # float16 2048 x 1.5 rows/s
            "text features": kept * 5000}
    assert disk == {"download": 6.48e9, "normalized videos": 4.52e9, "video features": 555_417_600.0,
                    "audio features": 1_084_800_000.0, "video3d features": 833_126_400.0, "text features": 11_300_000.0}
    for stage, size in disk.items():
        assert by_stage[stage].bytes == pytest.approx(size), stage
    assert sum(line.bytes for line in lines) - by_stage["checkpoints"].bytes == pytest.approx(sum(disk.values()))

    # training: int(2400 x 0.75) = 1800 videos // 128 = 14 steps per epoch x 30 epochs per seed
    train = {t.experiment: t for t in summary["train"]}
    assert train["tv_ta_va"].steps == 14 * 30 and train["tv"].steps == 3 * 14 * 30
    assert train["tv_ta_va"].hours == pytest.approx(14 * 30 * 0.5 / HOUR)              # 0.0583 GPU-h
    tv = Plan(config).experiment_settings("tv", 1)
    tv_flops = sum(train_step_flops(tv, tv["training"], config["features"]["audio"]["n_mels"]))
    assert train["tv"].hours == pytest.approx(3 * 14 * 30 * 0.5 * tv_flops / reference_flops / HOUR)
    assert {t.label for t in train.values()} == {"GPU-measured"}
    assert by_stage["train"].gpu_hours == pytest.approx(sum(t.hours for t in train.values()))
    train_rows = [line for line in text.splitlines() if line.strip().startswith("tv_ta_va ")]
    assert train_rows and train_rows[0].split()[1:3] == ["1", "420"] and "GPU-measured" in train_rows[0]
