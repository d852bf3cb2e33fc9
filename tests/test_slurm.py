"""The demo workflow on a real SLURM cluster through profiles/slurm (snakemake-executor-plugin-slurm).

Runs only where SLURM answers: start a one-node cluster with `sudo scripts/slurm/start-cluster.sh`,
then `MCNFLOW_SLURM=1 pytest -m slurm tests/test_slurm.py` (about 3 minutes on 2 cores). With
MCNFLOW_SLURM=1 an unreachable cluster fails the test instead of skipping it.

The run goes from the demo corpus through download, the survival table (a localrule), normalization
and one shard's video (a GPU rule, asked here for no GPU) and audio features, and checks that every
non-local job was a SLURM job that sacct reports COMPLETED with the profile's account, partition and
CPUs, and that the outputs are right.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mcnflow.features.store import is_complete
from mcnflow.core.ledger import read_ledger

from workflow_utils import REPO, copy_workflow

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.e2e]

PORT = 18779  # the demo server's port for this test (the e2e test uses 18777, `make demo` 18765)
TIMEOUT_S = 1200
TARGETS = [
    "results/download/howto100m/survival.tsv",
    *[f"results/normalize/howto100m/shard-{shard}.tsv" for shard in ("00000", "00001", "00002")],
    "results/features/howto100m/video/shard-00000.h5",
    "results/features/howto100m/audio/shard-00000.h5",
]
LOCAL_RULES = {"manifest", "survival"}
# one media_shard per shard makes its normalize ledger and its video (2D, 3D) and audio features
SLURM_JOBS = {"demo_corpus": 1, "download_shard": 3, "media_shard": 3}
TEST_NODE_MEM_MB = 2000  # each job's memory request on the test node (the profile's are for real shards)


def slurm_unavailable() -> str | None:
    """Why SLURM cannot be used here, or None when `sinfo` answers."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return "no SLURM client here (sinfo not found); start a test cluster with scripts/slurm/start-cluster.sh"
    try:
        answer = subprocess.run([sinfo, "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 10 s (is slurmctld running? scripts/slurm/start-cluster.sh)"
    if answer.returncode != 0 or not answer.stdout.strip():
        return f"sinfo does not answer: {answer.stderr.strip() or 'no partitions'} (scripts/slurm/start-cluster.sh)"
    return None


@pytest.fixture(scope="module")
def slurm_ready():
    reason = slurm_unavailable()
    if reason and os.environ.get("MCNFLOW_SLURM") == "1":
        pytest.fail(f"MCNFLOW_SLURM=1 but SLURM is not usable: {reason}")
    if reason:
        pytest.skip(reason)


def cpu_only_profile(profile: dict, jobname_prefix: str) -> dict:
    """profiles/slurm for a node without GPUs, sized for the demo: the GPU rules ask for `gpu: 0`
    (the rules declare gpu=1 themselves), every job for TEST_NODE_MEM_MB, quick status checks, and
    SLURM logs kept so the test can map job ids to rules. Partition and account may be overridden
    with MCNFLOW_SLURM_PARTITION / MCNFLOW_SLURM_ACCOUNT to try another cluster."""
    profile = yaml.safe_load(yaml.safe_dump(profile))
    for resources in profile["set-resources"].values():
        if "gpu" in resources:
            resources["gpu"] = 0
        resources["mem_mb"] = TEST_NODE_MEM_MB
    defaults = profile["default-resources"]
    defaults["mem_mb"] = TEST_NODE_MEM_MB
    defaults["slurm_partition"] = os.environ.get("MCNFLOW_SLURM_PARTITION", defaults["slurm_partition"])
    defaults["slurm_account"] = os.environ.get("MCNFLOW_SLURM_ACCOUNT", defaults["slurm_account"])
    profile.update({
        "slurm-jobname-prefix": jobname_prefix,
        "slurm-init-seconds-before-status-checks": 2,
        "slurm-keep-successful-logs": True,
        "latency-wait": 10,
    })
    return profile


def our_job_ids(prefix: str) -> list[str]:
    queue = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True)
    return [line.split()[0] for line in queue.stdout.splitlines() if line.split()[1:2] and line.split()[1].startswith(prefix)]


def cancel_our_jobs(prefix: str) -> None:
    ids = our_job_ids(prefix)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def sacct_jobs(job_ids: list[str]) -> dict[str, dict[str, str]]:
    fields = ["JobIDRaw", "JobName", "State", "Account", "Partition", "AllocCPUS", "ReqTRES"]
    answer = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)],
        capture_output=True, text=True, check=True,
    )
    return {row[0]: dict(zip(fields, row)) for row in csv.reader(answer.stdout.splitlines(), delimiter="|") if row}


@pytest.fixture(scope="module")
def slurm_run(slurm_ready, tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm"))
    # rules' conda: files, which Snakemake reads to record job metadata even without --use-conda
    if (REPO / "envs").is_dir() and not (workdir / "envs").exists():
        shutil.copytree(REPO / "envs", workdir / "envs")
    demo_cfg = yaml.safe_load((workdir / "demo/config.yaml").read_text())
    demo_cfg["demo"]["port"] = PORT
    for corpus in ("howto100m", "youcook2"):
        template = demo_cfg["corpora"][corpus]["url_template"]
        demo_cfg["corpora"][corpus]["url_template"] = template.replace("18765", str(PORT))
    (workdir / "demo/config.yaml").write_text(yaml.safe_dump(demo_cfg, sort_keys=False))

    prefix = f"mcnflow-test-{os.getpid()}"
    profile = yaml.safe_load((workdir / "profiles/slurm/config.yaml").read_text())
    (workdir / "profiles/slurm-cpu").mkdir()
    (workdir / "profiles/slurm-cpu/config.yaml").write_text(yaml.safe_dump(cpu_only_profile(profile, prefix)))

    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    # targets first: --configfile takes every path after it
    command = [sys.executable, "-m", "snakemake", *TARGETS,
               "--profile", "profiles/slurm-cpu", "--configfile", "demo/config.yaml"]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"snakemake on SLURM did not finish within {TIMEOUT_S} s:\n{output[-6000:]}")
    finally:
        cancel_our_jobs(prefix)
    elapsed = time.monotonic() - started
    print(f"SLURM demo subset: {elapsed:.0f} s")
    assert process.returncode == 0, f"snakemake --profile profiles/slurm-cpu failed:\n{output[-8000:]}"
    return {"workdir": workdir, "output": output, "prefix": prefix}


def slurm_logs(workdir: Path) -> dict[str, str]:
    """SLURM job id -> rule, from the plugin's per-job logs: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<id>.log"""
    jobs = {}
    for log in (workdir / ".snakemake/slurm_logs").glob("rule_*/**/*.log"):
        rule = log.relative_to(workdir / ".snakemake/slurm_logs").parts[0].removeprefix("rule_")
        jobs[log.stem] = rule
    return jobs


def test_every_non_local_job_ran_as_a_completed_slurm_job(slurm_run):
    jobs = slurm_logs(slurm_run["workdir"])
    rules = sorted(jobs.values())
    assert {rule: rules.count(rule) for rule in set(rules)} == SLURM_JOBS
    accounted = sacct_jobs(list(jobs))
    assert set(accounted) == set(jobs), "sacct misses jobs the plugin submitted"
    profile = yaml.safe_load((slurm_run["workdir"] / "profiles/slurm-cpu/config.yaml").read_text())
    for job_id, row in accounted.items():
        assert row["State"] == "COMPLETED", (jobs[job_id], row)
        assert row["JobName"].startswith(slurm_run["prefix"]), row
        assert row["Account"] == profile["default-resources"]["slurm_account"], row
        assert row["Partition"] == profile["default-resources"]["slurm_partition"], row
        assert "gpu" not in row["ReqTRES"], row
        assert f"mem={TEST_NODE_MEM_MB}M" in row["ReqTRES"], row
        # cpus_per_task: threads -> media_shard declares decode_workers + 1 (the demo: 2), the others 1
        assert int(row["AllocCPUS"]) == (2 if jobs[job_id] == "media_shard" else 1), (jobs[job_id], row)
    # each submission was announced with its SLURM job id
    assert slurm_run["output"].count("has been submitted with SLURM jobid") == sum(SLURM_JOBS.values())


def test_localrules_ran_on_the_submit_host(slurm_run):
    assert not LOCAL_RULES & set(slurm_logs(slurm_run["workdir"]).values())
    assert (slurm_run["workdir"] / "results/manifest/howto100m.tsv").exists()
    assert (slurm_run["workdir"] / "results/download/howto100m/survival.tsv").exists()


def _ledger(workdir: Path, stage: str) -> dict[str, dict[str, str]]:
    rows = {}
    for path in sorted((workdir / f"results/{stage}/howto100m").glob("shard-*.tsv")):
        rows.update({row["video_id"]: row for row in read_ledger(path)})
    return rows


def test_jobs_on_the_node_reached_the_demo_server_of_the_submit_host(slurm_run):
    rows = _ledger(slurm_run["workdir"], "download")
    assert len(rows) == 16
    assert rows["demo0000003"]["status"] == rows["demo0000011"]["status"] == "unavailable"
    assert rows["demo0000005"]["status"] == "ok" and int(rows["demo0000005"]["attempts"]) == 2
    assert sum(row["status"] == "ok" for row in rows.values()) == 14
    survival = (slurm_run["workdir"] / "results/download/howto100m/survival.tsv").read_text()
    assert "ok" in survival and "unavailable" in survival


def test_normalize_ledgers_and_features(slurm_run):
    rows = _ledger(slurm_run["workdir"], "normalize")
    assert rows["demo0000003"]["status"] == "not_downloaded"
    assert rows["demo0000007"]["status"] == "ok" and rows["demo0000007"]["has_audio"] == "false"
    ok = [row for row in rows.values() if row["status"] == "ok"]
    assert len(ok) == 14
    assert all((row["width"], row["height"]) == ("454", "256") and float(row["fps"]) == 30 for row in ok)
    for modality in ("video", "audio"):
        assert is_complete(slurm_run["workdir"] / f"results/features/howto100m/{modality}/shard-00000.h5")
