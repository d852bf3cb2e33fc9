"""The workflow's plan: one job per shard per stage, never one per video."""

import math

import pytest

from workflow_utils import REPO, copy_workflow, job_counts, snakemake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("plan"))


def _demo_plan():
    """What the demo config plans: shards per corpus, experiments x seeds, benchmarks."""
    from mcnflow.core.config import load_config

    config = load_config([REPO / "config.yaml", REPO / "demo/config.yaml"])
    demo, size = config["demo"], config["shard_size"]
    videos = {"howto100m": demo["train_videos"], "youcook2": demo["eval_videos"], "msrvtt": demo["msrvtt_videos"],
              "crosstask": demo.get("crosstask_videos", 0), "mining_youtube": demo.get("mining_youtube_videos", 0)}
    shards = sum(max(1, math.ceil(videos[corpus] / size)) for corpus in config["corpora"])
    branches = sum(len(spec.get("seeds") or config["seeds"]) for spec in config["experiments"].values())
    return config, shards, branches


def test_dry_run_has_one_job_per_shard_per_stage(workdir):
    result = snakemake(workdir, "-n", "--quiet", "rules")
    counts = job_counts(result.stdout + result.stderr)
    config, shards, branches = _demo_plan()
    corpora = len(config["corpora"])
    assert counts["download_shard"] == shards
    # one decode per shard gives the normalize ledger and the video and audio features
    assert counts["media_shard"] == counts["extract_text"] == shards
    assert not {"normalize_shard", "extract_video", "extract_audio"} & set(counts)
    assert counts["manifest"] == corpora and counts["survival"] == corpora and counts["word2vec"] == 1
    # HowTo100M's caption.json is read by one job, which splits it per shard for the text jobs
    assert counts["split_captions"] == 1
    benchmarks = len(config["evaluation"]["benchmarks"])
    assert counts["train"] == branches and counts["evaluate"] == branches * benchmarks and counts["summarize"] == 1


def test_shard_size_changes_the_number_of_jobs_not_videos(workdir):
    result = snakemake(workdir, "-n", "--quiet", "rules", "--config", "shard_size=1000")
    counts = job_counts(result.stdout + result.stderr)
    corpora = len(_demo_plan()[0]["corpora"])
    assert counts["download_shard"] == counts["media_shard"] == corpora  # one shard per corpus


def test_invalid_config_stops_the_workflow_with_the_key_named(workdir):
    result = snakemake(workdir, "-n", "--config", "shard_size=0", check=False)
    assert result.returncode != 0
    assert "shard_size" in result.stdout + result.stderr


def test_lint_is_clean(workdir):
    result = snakemake(workdir, "--lint", check=False)
    output = result.stdout + result.stderr
    # snakemake --lint exits 1 when it finds lints, and otherwise only when it could not lint at all
    assert result.returncode == 0, output[-4000:]
    assert "Lints for" not in output, output[-4000:]


def test_snakefmt_formatting(repo_root):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent))
    assert snakefmt, "snakefmt is a test dependency (pip install -e '.[test]')"
    result = subprocess.run([snakefmt, "--check", "Snakefile", "workflow/"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_rules_compute_no_setting_of_their_own():
    # one place computes settings (core/plan.py); rule files call it and never read the config themselves
    for path in sorted((REPO / "workflow").rglob("*.smk")) + [REPO / "Snakefile"]:
        text = path.read_text(encoding="utf-8")
        assert "config[" not in text and "config.get(" not in text, f"{path.name} reads the config directly"


def test_media_outputs_and_feature_stats_follow_the_stream_table(workdir):
    """Every stream the experiments read is made by the media rule and counted by feature_stats
    (feature_stats once forgot video3d)."""
    from mcnflow.core.config import load_config
    from mcnflow.core.plan import Plan

    made = Plan(load_config([REPO / "config.yaml", REPO / "demo/config.yaml"])).media_streams()
    assert "video3d" in made  # the demo trains MCN's 2D + 3D video
    result = snakemake(workdir, "-n", "-p", "--forceall", "results/features/youcook2/stats.tsv")
    commands = result.stdout + result.stderr
    for name in made:
        assert f"--{name}-output results/features/youcook2/{name}/shard-00000.h5" in commands
        assert f"--{name}-ledger results/features/youcook2/{name}/shard-00000.tsv" in commands
        assert f"results/features/youcook2/{name}/shard-00000.tsv" in commands.split("feature-stats", 1)[1]
    assert "results/features/youcook2/text/shard-00000.tsv" in commands.split("feature-stats", 1)[1]
