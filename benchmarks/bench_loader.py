"""The training loader at MCN's size: clips per CPU-second of an older commit's loader and of this tree's,
on the same shards, cold and warm page cache, and the loader workers one H200 needs.

    .venv/bin/python benchmarks/bench_loader.py                        # against 5043817, config.yaml's dims
    .venv/bin/python benchmarks/bench_loader.py --rounds 1 --video-features 2d --base 5043817

What it does, in one run:
  1. Writes HowTo100M-shaped shards: 2D ResNet features (2048-d, 1 row/s), 3D ResNeXt (2048-d,
     1.5 rows/s), log-mel (config.yaml's n_mels x 100 frames/s), text (ASR-like captions of ~4 s and
     4-12 words drawn by a Zipf law, each shard with its word2vec table in first-seen order, as
     `mcnflow extract text` writes it); video lengths log-normal around HowTo100M's mean (~390 s).
  2. Checks out ``--base`` in a git worktree and runs each loader in a fresh subprocess, the old one
     importing that worktree's ``src`` (PYTHONPATH): one epoch of the real ``Trainer.loader`` (batches of
     ``training.batch_size`` videos x ``n_pair`` clips), alternating old and new, ``--rounds`` times.
     Clean CPU figure: ``num_workers: 0`` and one torch thread (what each DataLoader worker is), so the
     process CPU time (time.process_time, user + system) is the loader's alone; the clock runs only
     while the loader produces a batch.
     Warm: every shard file read through before the run. Cold: posix_fadvise(POSIX_FADV_DONTNEED) on
     every shard file (after fsync) before each run, which drops their pages from the page cache.
     Shards: the old loader keeps every file open, as it would over HowTo100M's 1,220 shards x 4 files
     with the limit raised; the new one keeps ``--max-open-files`` descriptors, few enough that, as at
     full size, almost every video is in a file it has to open again.
  3. With ``--workers N`` also one warm epoch through N DataLoader workers: the CPU of the main process
     and of its workers (RUSAGE_CHILDREN once they are joined), so handing batches over counts too.
  4. The GPU side: with CUDA, MCN's training step at config.yaml's size is timed on a batch in memory;
     without, its FLOPs are counted (torch's FlopCounterMode on the model at config.yaml's dims, forward
     and backward, plus the float32 MMS similarities) and turned into clips/s from the H200's stated
     throughput at an assumed utilisation (printed). Workers needed = GPU clips/s / loader clips per CPU-second.

Both loaders must deliver identical batches (same clips for the same seed): the bench compares digests
of every run's first batch and fails if they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STREAMS = ("2d", "3d")
# rows per second of the 2D and 3D streams, and what their extractors record (docs/hdf5_layout.md)
STREAM_RATE = {"2d": 1.0, "3d": 1.5}
FEATURE_DIM = 2048
# NVIDIA H200 SXM datasheet, dense (no sparsity): FP16/BF16 tensor cores, and plain FP32
H200_TENSOR_TFLOPS = 989.0
H200_FP32_TFLOPS = 67.0


# --- shards -------------------------------------------------------------------------------------

def write_shards(root: Path, args: argparse.Namespace, config: dict) -> dict:
    """HowTo100M-shaped shards of the four feature files; returns the paths and what was written."""
    import torch

    from mcnflow.features.store import ShardWriter
    from mcnflow.features.word2vec import fingerprint

    rng = np.random.default_rng(args.seed)
    n_mels = int(config["features"]["audio"]["n_mels"])
    frames_per_second = 1000.0 / float(config["features"]["audio"]["hop_ms"])
    word_dim = int(config["training"]["word_dim"])
    words = [f"w{i}" for i in range(args.vocabulary)]
    vectors = rng.normal(size=(args.vocabulary, word_dim)).astype(np.float32)
    source = fingerprint(words, vectors)
    # word frequencies: Zipf-Mandelbrot over the ranks (English text: most tokens are frequent words)
    frequency = 1.0 / (np.arange(args.vocabulary) + 2.7)
    frequency /= frequency.sum()
    # log-normal lengths: median args.seconds / 1.3, mean ~args.seconds (sigma 0.72), within [30 s, 1 h]
    sigma = 0.72
    seconds = np.clip(rng.lognormal(math.log(args.seconds) - sigma ** 2 / 2, sigma, args.videos), 30, 3600).astype(int)

    def half(shape: tuple[int, ...]) -> np.ndarray:  # float16 random features (torch casts ~25x faster)
        return torch.from_numpy(rng.random(shape, dtype=np.float32)).half().numpy()

    kinds = {"video": ("video", {"fps": 1}), "video3d": ("video", {"rows_per_second": 1.5, "features": "3d"}),
             "audio": ("audio", {"hop_ms": float(config["features"]["audio"]["hop_ms"])}),
             "text": ("text", {"word2vec_fingerprint": source})}
    paths: dict[str, list[str]] = {kind: [] for kind in kinds}
    captions = tokens = table_words = 0
    shards = math.ceil(args.videos / args.videos_per_shard)
    for shard in range(shards):
        members = range(shard * args.videos_per_shard, min(args.videos, (shard + 1) * args.videos_per_shard))
        writers = {}
        for kind, (modality, attrs) in kinds.items():
            path = root / kind / f"shard-{shard:05d}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            writers[kind] = ShardWriter(path, modality, "bench", shard, attrs=attrs).__enter__()
            paths[kind].append(str(path))
        table: dict[int, int] = {}  # word rank -> row of this shard's table, first seen first (as features.text)
        for i in members:
            video_id, duration = f"v{i:07d}", int(seconds[i])
            # ASR captions back to back, ~args.caption_seconds each, of 4-12 words drawn by frequency
            count = max(1, int(duration / args.caption_seconds))
            starts = np.sort(rng.uniform(0, duration - 1, count)).astype(np.float32)
            ends = np.minimum(starts + rng.uniform(0.5, 2 * args.caption_seconds, count), duration).astype(np.float32)
            lengths = rng.integers(4, 13, count)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            ranks = rng.choice(args.vocabulary, size=int(offsets[-1]), p=frequency)
            token_ids = np.array([table.setdefault(int(r), len(table)) for r in ranks], dtype=np.int32)
            writers["text"].add(video_id, {"token_ids": token_ids, "offsets": offsets, "start": starts, "end": ends})
            writers["video"].add(video_id, half((duration, FEATURE_DIM)))
            writers["video3d"].add(video_id, half((math.ceil(duration * STREAM_RATE["3d"]), FEATURE_DIM)))
            writers["audio"].add(video_id, half((n_mels, int(duration * frames_per_second))))
            captions, tokens = captions + count, tokens + int(offsets[-1])
        used = np.fromiter(table, dtype=np.int64, count=len(table))
        writers["text"].add_word_table([words[r] for r in used], vectors[used])
        table_words += len(table)
        for writer in writers.values():
            writer.__exit__(None, None, None)
    size = sum(os.path.getsize(p) for group in paths.values() for p in group)
    return {"paths": paths, "mean_seconds": float(seconds.mean()), "shards": shards, "bytes": size,
            "captions_per_video": captions / args.videos, "tokens_per_caption": tokens / captions,
            "table_words": table_words / shards}


def all_files(paths: dict) -> list[str]:
    return [p for group in paths.values() for p in group]


def drop_from_page_cache(files: list[str]) -> None:
    """Cold cache: the kernel drops the files' clean pages (fsync first so every page is clean)."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_through(files: list[str]) -> None:
    """Warm cache: read every file once."""
    block = bytearray(1 << 24)
    for path in files:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(block):
                pass


# --- one loader in its own process --------------------------------------------------------------

def child(args: argparse.Namespace) -> None:
    """Run one epoch of the importable mcnflow's training loader; print a JSON line of what it cost."""
    import inspect

    import torch

    import mcnflow
    from mcnflow.training.dataset import ClipDataset
    from mcnflow.training.trainer import Trainer

    torch.set_num_threads(1)  # as in a DataLoader worker
    spec = json.loads(Path(args.child).read_text())
    paths, training = spec["paths"], spec["training"]
    options = {}
    if "max_open_files" in inspect.signature(ClipDataset).parameters:
        options["max_open_files"] = spec["max_open_files"]
    dataset = ClipDataset(shards=paths, video_features=training["video_features"], modalities=["video", "audio", "text"],
                          n_pair=training["n_pair"], min_time=training["min_time"], max_words=training["max_words"],
                          audio_frames=training["audio_frames"], seed=training["seed"], **options)
    trainer = Trainer(spec["settings"], dataset, Path(spec["out"]), "bench")  # a tiny model: only its loader runs
    dataset.set_epoch(0)
    trainer.sampler.set_epoch(0)
    digest, clips, cpu, wall = {}, 0, 0.0, 0.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    loader = iter(trainer.loader)
    while True:  # the clocks run while the loader works, not while the first batch is digested
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        batch = next(loader, None)
        cpu, wall = cpu + time.process_time() - started_cpu, wall + time.perf_counter() - started_wall
        if batch is None:
            break
        if not digest:
            digest = {key: hashlib.sha256(value.numpy().tobytes()).hexdigest() for key, value in batch.items()}
        clips += int(batch["mask"].shape[0] * batch["mask"].shape[1])
        del batch
    del loader  # joins the workers, so their CPU time is in RUSAGE_CHILDREN
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    files = getattr(dataset, "files", None)
    print(json.dumps({"mcnflow": str(Path(mcnflow.__file__).parent), "clips": clips, "cpu_s": cpu + workers_cpu,
                      "wall_s": wall, "digest": digest, "opened": getattr(files, "opened", None),
                      "reads": len(dataset) * (1 + len(training["video_features"]) + 1)}))


def run_child(source: Path, spec_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, __file__, "--child", str(spec_path)], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the loader of {source} failed:\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if Path(report["mcnflow"]).resolve() != (source / "mcnflow").resolve():
        raise SystemExit(f"expected mcnflow from {source}, the child imported {report['mcnflow']}")
    return report


# --- the GPU side -------------------------------------------------------------------------------

def model_settings(config: dict, *, tiny: bool) -> dict:
    """Experiment settings of MCN (tv, ta, va; shared space; every loss) at config.yaml's training section;
    ``tiny``: the same inputs with a small model (the loader runs have no model to feed)."""
    training = {key: value for key, value in config["training"].items() if key != "departures"}
    training.update(epochs=1, device="cpu" if tiny else "cuda", tensorboard=False, seed=1, warmup_steps=0)
    if tiny:
        training.update(embd_dim=16, recon_size=8, clusters=4, audio_widths=[8, 8, 8, 8, 16], amp=False)
    term = {"enabled": True, "weight": 1.0}
    return {"pairs": ["tv", "ta", "va"], "space": "shared", "training": training,
            "losses": {"mms": term, "clustering": term, "reconstruction": {"enabled": True, "weight": 50.0}}}


def mcn_flops_per_clip(config: dict) -> tuple[float, float]:
    """(tensor-core FLOPs, float32 FLOPs) of one clip's training step: the model forward + backward
    counted by torch's FlopCounterMode on meta tensors at config.yaml's dims, and the MMS similarities
    (float32 in mcnflow.model.losses: 3 matmuls of N x N x embd_dim per pair, forward + backward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mcnflow.model.mcn import MCN

    training = config["training"]
    clips = 64  # every layer's FLOPs are linear in the batch: count a small one on meta tensors
    n_mels = int(config["features"]["audio"]["n_mels"])
    with torch.device("meta"):
        model = MCN(["tv", "ta", "va"], "shared", embd_dim=training["embd_dim"], video_dim=training["video_dim"],
                    word_dim=training["word_dim"], recon_size=training["recon_size"], n_mels=n_mels,
                    audio_widths=training["audio_widths"])
        batch = {"video": torch.zeros(clips, training["video_dim"]),
                 "audio": torch.zeros(clips, n_mels, training["audio_frames"]),
                 "nframes": torch.zeros(clips, dtype=torch.long),
                 "words": torch.zeros(clips, training["max_words"], training["word_dim"]),
                 "mask": torch.ones(clips, training["max_words"], dtype=torch.bool)}
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        output = model(batch)
        total = sum(e.sum() for space in output.embeddings.values() for e in space.values())
        total = total + sum(r.sum() for space in output.reconstructions.values() for r in space.values())
        total.backward()
    per_step_clips = training["batch_size"] * training["n_pair"]
    mms = 3 * 3 * 2 * per_step_clips * training["embd_dim"]  # per clip: 3 pairs x (fwd + 2 bwd) x 2 N d
    return counter.get_total_flops() / clips, float(mms)


def gpu_clips_per_second(config: dict, utilisation: float, steps: int, paths: dict) -> tuple[float, str]:
    import torch

    if torch.cuda.is_available():
        return measured_gpu_rate(config, steps, paths)
    tensor, fp32 = mcn_flops_per_clip(config)
    seconds = tensor / (H200_TENSOR_TFLOPS * 1e12 * utilisation) + fp32 / (H200_FP32_TFLOPS * 1e12 * utilisation)
    how = (f"no GPU here: from FLOPs. MCN's training step per clip (config.yaml dims): {tensor / 1e9:.1f} GFLOP model "
           f"forward + backward (torch FlopCounterMode; ResDAVEnet dominates) at H200 dense FP16 {H200_TENSOR_TFLOPS:g} "
           f"TFLOPS, plus {fp32 / 1e9:.2f} GFLOP float32 MMS similarities at {H200_FP32_TFLOPS:g} TFLOPS, both at an "
           f"assumed {utilisation:.0%} utilisation (k-means refits and the optimizer left out)")
    return 1.0 / seconds, how


def measured_gpu_rate(config: dict, steps: int, paths: dict) -> tuple[float, str]:
    """MCN's train_step at config.yaml's size on the CUDA device, fed one batch of the bench's shards
    from memory (as bench_train_step's memory feed)."""
    import torch

    from mcnflow.training.dataset import ClipDataset
    from mcnflow.training.trainer import Trainer

    settings = model_settings(config, tiny=False)
    training = settings["training"]
    training["num_workers"] = 0
    dataset = ClipDataset(shards=paths, video_features=training["video_features"], modalities=["video", "audio", "text"],
                          n_pair=training["n_pair"], min_time=training["min_time"], max_words=training["max_words"],
                          audio_frames=training["audio_frames"], seed=training["seed"])
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(settings, dataset, out, "bench")
        trainer.model.train()
        batch = {key: value.pin_memory() for key, value in next(iter(trainer.loader)).items()}
        dataset.close()
        for _ in range(2):
            trainer.train_step(batch)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - started) / steps
    clips = trainer.videos_per_step * training["n_pair"]
    return clips / seconds, (f"measured on {torch.cuda.get_device_name()}: MCN's train_step at config.yaml's size "
                             f"(AMP {training['amp']}), {seconds * 1000:.0f} ms per step of {clips} clips")


# --- the parent ---------------------------------------------------------------------------------

def worktree(commit: str, where: Path) -> bool:
    """Check ``commit`` out at ``where`` (a git worktree of this repository); True if this run made it.
    An existing checkout there is used as it is."""
    if (where / "src" / "mcnflow").is_dir():
        return False
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), commit], check=True,
                   capture_output=True)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", default=str(REPO / "config.yaml"), help="dims and batch shape from here")
    parser.add_argument("--video-features", nargs="+", choices=STREAMS, default=None,
                        help="the video streams read (default: training.video_features)")
    parser.add_argument("--base", default="5043817", help="the commit whose loader is compared")
    parser.add_argument("--base-dir", default=None,
                        help="its worktree: used if it exists, else made and removed after (default: under the temp dir)")
    parser.add_argument("--videos", type=int, default=384, help="videos in the synthetic corpus (one epoch)")
    parser.add_argument("--videos-per-shard", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=390.0, help="mean video length (HowTo100M: ~390 s)")
    parser.add_argument("--caption-seconds", type=float, default=4.0, help="mean ASR caption length")
    parser.add_argument("--vocabulary", type=int, default=100000, help="words of the word2vec source (Zipf-ranked)")
    parser.add_argument("--max-open-files", type=int, default=8,
                        help="the new loader's bound: small, so that, as over HowTo100M's 1,220 shards x 4 files, "
                             "most videos are in a file it does not hold open (0: training.max_open_files)")
    parser.add_argument("--rounds", type=int, default=3, help="warm runs of each loader (median reported)")
    parser.add_argument("--cold-rounds", type=int, default=3, help="cold runs of each loader (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the worker-mode run (0: skip)")
    parser.add_argument("--gpu-utilisation", type=float, default=0.4, help="assumed when no GPU is present")
    parser.add_argument("--gpu-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="write the shards here (default: a temporary directory)")
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from mcnflow.core.config import load_schema, load_yaml

    config = load_yaml(args.config)
    training = config["training"]
    if args.video_features:
        training["video_features"] = list(args.video_features)
        training["video_dim"] = FEATURE_DIM * len(args.video_features)
    max_open = args.max_open_files
    if not max_open:
        max_open = training.get("max_open_files",
                                load_schema()["properties"]["training"]["properties"]["max_open_files"]["default"])
    base_dir = Path(args.base_dir or Path(tempfile.gettempdir()) / f"mcn-bench-base-{args.base}-{os.getpid()}")
    made = worktree(args.base, base_dir)
    data = Path(args.dir or tempfile.mkdtemp(prefix="bench-loader-"))
    try:
        started = time.perf_counter()
        written = write_shards(data, args, config)
        files = all_files(written["paths"])
        print(f"wrote {args.videos} videos (mean {written['mean_seconds']:.0f} s, {written['captions_per_video']:.0f} "
              f"captions of {written['tokens_per_caption']:.1f} words, {written['table_words']:.0f} distinct words per "
              f"shard), {written['shards']} shards x 4 files "
              f"(2D, 3D, audio, text), {written['bytes'] / 1e9:.1f} GB, in {time.perf_counter() - started:.0f} s")
        print(f"batches of {training['batch_size']} videos x {training['n_pair']} clips; streams "
              f"{','.join(training['video_features'])} + audio ({config['features']['audio']['n_mels']} mels, "
              f"{training['audio_frames']} frames) + text ({training['max_words']} words x {training['word_dim']}); "
              f"new loader: max_open_files {max_open}")

        def spec(workers: int) -> Path:
            settings = model_settings(config, tiny=True)
            settings["training"]["num_workers"] = workers
            path = data / f"spec-{workers}.json"
            path.write_text(json.dumps({"paths": written["paths"], "training": settings["training"], "settings": settings,
                                        "max_open_files": max_open, "out": str(data / "out")}))
            return path

        sources = {"old": base_dir / "src", "new": REPO / "src"}
        runs: dict[tuple[str, str], list[dict]] = {}
        serial = spec(0)
        for _ in range(args.cold_rounds):
            for name, source in sources.items():
                drop_from_page_cache(files)
                runs.setdefault(("cold", name), []).append(run_child(source, serial))
        read_through(files)
        for _ in range(args.rounds):
            for name, source in sources.items():
                runs.setdefault(("warm", name), []).append(run_child(source, serial))
        if args.workers:
            parallel = spec(args.workers)
            for name, source in sources.items():
                runs.setdefault((f"warm, {args.workers} workers", name), []).append(run_child(source, parallel))

        digests = {name: runs[("warm", name)][0]["digest"] for name in sources}
        identical = digests["old"] == digests["new"] and all(
            r["digest"] == digests["new"] for group in runs.values() for r in group)
        gpu_rate, how = gpu_clips_per_second(config, args.gpu_utilisation, args.gpu_steps, written["paths"])

        print(f"\nclips per CPU-second (one epoch, {args.videos} videos; median of runs; old = {args.base}, "
              f"new = this tree)")
        print(f"{'page cache':24s} {'old':>10s} {'new':>10s} {'new/old':>8s} {'old wall':>10s} {'new wall':>10s}"
              f" {'workers/H200 old':>17s} {'new':>5s}")
        for mode in dict.fromkeys(m for m, _ in runs):
            rate = {n: float(np.median([r["clips"] / r["cpu_s"] for r in runs[(mode, n)]])) for n in sources}
            wall = {n: float(np.median([r["clips"] / r["wall_s"] for r in runs[(mode, n)]])) for n in sources}
            print(f"{mode:24s} {rate['old']:10.0f} {rate['new']:10.0f} {rate['new'] / rate['old']:8.2f} "
                  f"{wall['old']:10.0f} {wall['new']:10.0f} {math.ceil(gpu_rate / rate['old']):17d} "
                  f"{math.ceil(gpu_rate / rate['new']):5d}")
        opened = [r["opened"] for r in runs[("warm", "new")] if r["opened"] is not None]
        if opened:
            print(f"new loader: {opened[0]} shard files opened for {runs[('warm', 'new')][0]['reads']} video reads "
                  f"(max_open_files {max_open}: {max_open // 2} files held)")
        print(f"(wall: clips per second of wall time, CPU and I/O; cold is I/O-bound on this disk)")
        print(f"\none H200: {gpu_rate:,.0f} clips/s ({how})")
        print("workers/H200 = ceil(H200 clips/s / loader clips per CPU-second): busy single-threaded loader "
              "processes, each on a core of its own")
        print(f"first batches identical (old vs new, every run): {'yes' if identical else 'NO'}")
        if not identical:
            raise SystemExit("the loaders disagree: the new one must deliver the same clips")
    finally:
        if not args.dir:
            shutil.rmtree(data, ignore_errors=True)
        if made:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_dir)], check=False)


if __name__ == "__main__":
    main()
