"""The workflow's plan: one job per shard per stage, never one per video."""

import math

import pytest

from workflow_utils import copy_workflow, job_counts, snakemake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("plan"))


def test_dry_run_has_one_job_per_shard_per_stage(workdir):
    result = snakemake(workdir, "-n", "--quiet", "rules")
    counts = job_counts(result.stdout + result.stderr)
    # demo/config.yaml: 16 training videos, 8 YouCook2, 12 MSR-VTT, 4 CrossTask, shard_size 6
    shards = math.ceil(16 / 6) + math.ceil(8 / 6) + math.ceil(12 / 6) + math.ceil(4 / 6)
    assert counts["download_shard"] == shards
    assert counts["normalize_shard"] == shards
    assert counts["extract_video"] == counts["extract_audio"] == counts["extract_text"] == shards
    assert counts["manifest"] == 4 and counts["survival"] == 4 and counts["word2vec"] == 1
    assert counts["train"] == 8 * 2 and counts["evaluate"] == 8 * 2 * 4  # 2 seeds and counts["summarize"] == 1


def test_shard_size_changes_the_number_of_jobs_not_videos(workdir):
    result = snakemake(workdir, "-n", "--quiet", "rules", "--config", "shard_size=1000")
    counts = job_counts(result.stdout + result.stderr)
    assert counts["download_shard"] == 4  # one shard per corpus


def test_invalid_config_stops_the_workflow_with_the_key_named(workdir):
    result = snakemake(workdir, "-n", "--config", "shard_size=0", check=False)
    assert result.returncode != 0
    assert "shard_size" in result.stdout + result.stderr


def test_lint_is_clean(workdir):
    result = snakemake(workdir, "--lint", check=False)
    output = result.stdout + result.stderr
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
