"""profiles/slurm asks every per-shard job for at least its recorded peak memory and wall time x 1.5.

The recorded figures are the rehearsal's (`benchmarks/rehearsal.py`, committed as
benchmarks/results/rehearsal.tsv): one row per job and corpus size, measured as separate processes.
A profile value below the largest recorded figure x MARGIN fails here, so a job that got heavier (or a
profile edit that got lighter) is caught before a cluster kills 1,220 jobs for it.
"""

from __future__ import annotations

import csv

import pytest
import yaml

from workflow_utils import REPO

RECORDED = REPO / "benchmarks/results/rehearsal.tsv"
PROFILE = REPO / "profiles/slurm/config.yaml"
MARGIN = 1.5
SECONDS_PER_MINUTE = 60
FULL_SIZE_VIDEOS = 1_220_000  # HowTo100M
# rehearsal job -> the workflow rule that runs it (the other rehearsal jobs are localrules, the plan or
# parts of a rule)
MEASURED_RULES = {"split_captions": "split_captions", "extract_text": "extract_text"}
# every rule that runs once per shard (or once per corpus over its shards) on the cluster
PER_SHARD_RULES = ("download_shard", "media_shard", "split_captions", "extract_text")


def recorded() -> dict[str, dict[str, float]]:
    """job -> its largest wall time, peak RSS and corpus size over the recorded sizes."""
    peaks: dict[str, dict[str, float]] = {}
    with open(RECORDED, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            peak = peaks.setdefault(row["job"], {"wall_s": 0.0, "max_rss_mb": 0.0, "videos": 0})
            peak["wall_s"] = max(peak["wall_s"], float(row["wall_s"]))
            peak["max_rss_mb"] = max(peak["max_rss_mb"], float(row["max_rss_mb"]))
            peak["videos"] = max(peak["videos"], int(row["videos"]))
    return peaks


def profile_resources() -> dict[str, dict]:
    return yaml.safe_load(PROFILE.read_text())["set-resources"]


@pytest.mark.parametrize("job", sorted(MEASURED_RULES))
def test_profile_covers_the_recorded_peak_with_margin(job):
    peak = recorded()[job]
    resources = profile_resources()[MEASURED_RULES[job]]
    assert resources["mem_mb"] >= MARGIN * peak["max_rss_mb"], (
        f"{MEASURED_RULES[job]}: mem_mb {resources['mem_mb']} < {MARGIN} x recorded peak {peak['max_rss_mb']:.0f} MB")
    assert resources["runtime"] * SECONDS_PER_MINUTE >= MARGIN * peak["wall_s"], (
        f"{MEASURED_RULES[job]}: runtime {resources['runtime']} min < {MARGIN} x recorded {peak['wall_s']:.0f} s")


def test_the_recorded_figures_are_from_a_full_size_rehearsal():
    peaks = recorded()
    for job in MEASURED_RULES:
        assert peaks[job]["videos"] >= FULL_SIZE_VIDEOS, f"{job}: recorded up to {peaks[job]['videos']:.0f} videos"


def test_every_per_shard_rule_has_its_own_memory_and_runtime():
    resources = profile_resources()
    for rule in PER_SHARD_RULES:
        assert {"mem_mb", "runtime"} <= set(resources.get(rule, {})), rule
