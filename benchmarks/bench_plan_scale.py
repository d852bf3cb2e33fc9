"""How fast does the workflow plan a full-size HowTo100M run?

Makes a 1.2M-row HowTo100M_v1.csv (random valid YouTube ids), a small YouCook2 annotation file and the
real MSR-VTT split, then times `snakemake -n` (wall time and peak memory of the whole process tree).
Goal (issue: orchestration at scale): under 60 s and 4 GB on 2 cores.

    .venv/bin/python benchmarks/bench_plan_scale.py [--videos 1200000] [--shard-size 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ALPHABET = string.ascii_letters + string.digits + "-_"


def make_inputs(root: Path, n_videos: int, seed: int = 0) -> dict:
    """Corpus files for a workflow copy in ``root``; returns the config overrides that point to them."""
    rng = random.Random(seed)
    data = root / "data"
    (data / "howto100m").mkdir(parents=True)
    (data / "youcook2").mkdir()
    with open(data / "howto100m/HowTo100M_v1.csv", "w") as handle:
        handle.write("video_id,category_1,category_2,rank,task_id\n")
        # unique by construction: a counter in base 64 is the id's tail, random letters its head
        for i in range(n_videos):
            tail = "".join(ALPHABET[(i >> (6 * k)) & 63] for k in range(4))
            vid = "".join(rng.choices(ALPHABET, k=7)) + tail
            handle.write(f"{vid},Food and Entertaining,Recipes,{i % 200 + 1},{i % 23000}\n")
    (data / "howto100m/caption.json").write_text("{}")
    database = {"".join(rng.choice(ALPHABET) for _ in range(11)): {
        "duration": 100.0, "subset": "validation", "recipe_type": "1", "video_url": "",
        "annotations": [{"segment": [1, 5], "id": 0, "sentence": "cut the onion"}]} for _ in range(457)}
    (data / "youcook2/annotations.json").write_text(json.dumps({"database": database}))
    msrvtt = REPO / "data/msrvtt/MSRVTT_JSFUSION_test.csv"
    return {"corpora": {
        "howto100m": {"videos_csv": str(data / "howto100m/HowTo100M_v1.csv"),
                      "captions": str(data / "howto100m/caption.json")},
        "youcook2": {"annotations": str(data / "youcook2/annotations.json")},
        "msrvtt": {"csv": str(msrvtt), "video_dir": str(data / "msrvtt")}}}


def copy_workflow(root: Path) -> None:
    for name in ("Snakefile", "config.yaml", "workflow", "profiles", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, root / name)


def dry_run_command(configfile: str = "bench.yaml") -> tuple[list[str], dict[str, str]]:
    """The `snakemake -n` command line and its environment (benchmarks/rehearsal.py times the same)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    command = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--cores", "2",
               "--configfile", configfile]
    return command, env


def dry_run(root: Path, configfile: str = "bench.yaml") -> subprocess.CompletedProcess:
    command, env = dry_run_command(configfile)
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1_200_000)
    parser.add_argument("--shard-size", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        overrides = make_inputs(root, args.videos)
        overrides["shard_size"] = args.shard_size
        print(f"made a {args.videos}-row manifest in {time.perf_counter() - t0:.1f} s")
        copy_workflow(root)
        (root / "bench.yaml").write_text(yaml.safe_dump(overrides))
        t0 = time.perf_counter()
        result = dry_run(root)
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:])
            return 1
        jobs = [line for line in result.stdout.splitlines() if line.strip().startswith("total")]
        print(result.stdout.strip().splitlines()[-20:] and "\n".join(result.stdout.strip().splitlines()[-18:]))
        print(f"snakemake -n on {args.videos} videos ({jobs[0].split()[-1] if jobs else '?'} jobs): "
              f"{wall:.1f} s wall, {peak_mb:.0f} MB peak RSS; goal < 60 s and < 4096 MB "
              f"(ratio to goal: {wall / 60:.2f} time, {peak_mb / 4096:.2f} memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
