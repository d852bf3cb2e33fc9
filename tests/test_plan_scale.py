"""A full-size HowTo100M manifest (1.2M videos) plans as one job per shard per stage.

Timing is the benchmark's job (benchmarks/bench_plan_scale.py); this test proves the structure:
the DAG grows with shards, not videos, and no per-video job or checkpoint appears.
"""

import importlib.util
import math

import pytest
import yaml

from workflow_utils import REPO, job_counts

pytestmark = pytest.mark.slow

spec = importlib.util.spec_from_file_location("bench_plan_scale", REPO / "benchmarks/bench_plan_scale.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_full_size_manifest_plans_one_job_per_shard(tmp_path):
    n_videos, shard_size = 1_200_000, 1000
    overrides = bench.make_inputs(tmp_path, n_videos)
    overrides["shard_size"] = shard_size
    bench.copy_workflow(tmp_path)
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(overrides))
    result = bench.dry_run(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    shards = math.ceil(n_videos / shard_size) + 1 + 1  # HowTo100M, YouCook2 (457 videos), MSR-VTT (1000)
    for stage in ("download_shard", "media_shard", "extract_text"):
        assert counts[stage] == shards, (stage, counts)
    assert counts["manifest"] == 3 and counts["word2vec"] == 1
    assert sum(counts.values()) < 7 * shards  # nothing scales with videos
