"""Training step time fed by the real HDF5 DataLoader vs fed by batches already in memory.

Both measurements run in one process on the same Trainer (the same model, objective and
train_step), so the ratio is the cost of reading shards, cutting clips and collating that the
DataLoader workers fail to hide. Goal: ratio <= 1.10.

    .venv/bin/python benchmarks/bench_train_step.py                       # CPU, small sizes
    .venv/bin/python benchmarks/bench_train_step.py --device cuda --videos 512 --batch-size 128 \
        --n-pair 32 --embd-dim 6144 --video-dim 2048 --audio-frames 1000 --num-workers 12 --amp

``--save-rates`` merges the loader-fed step time, the step's FLOPs and the device into
benchmarks/rates.yaml (``train_step_s_gpu`` or ``train_step_s_cpu``): ``mcnflow estimate`` scales it by
each experiment's FLOPs and labels its training hours GPU-measured or CPU-measured.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mcnflow.estimate import DEFAULT_RATES_FILE, save_rates, train_step_flops
from mcnflow.features.store import ShardWriter
from mcnflow.features.word2vec import fingerprint
from mcnflow.model import modalities_of
from mcnflow.training.dataset import ClipDataset
from mcnflow.training.trainer import Trainer


def write_shards(root: Path, args: argparse.Namespace) -> dict[str, list[Path]]:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(args.vocabulary)]
    vectors = rng.normal(size=(args.vocabulary, args.word_dim)).astype(np.float32)
    source = fingerprint(words, vectors)
    paths: dict[str, list[Path]] = {"video": [], "audio": [], "text": []}
    per_shard = -(-args.videos // args.shards)
    for shard in range(args.shards):
        writers = {m: ShardWriter(root / m / f"shard-{shard:05d}.h5", m, "bench", shard,
                                  attrs={"word2vec_fingerprint": source} if m == "text" else None) for m in paths}
        for modality, writer in writers.items():
            paths[modality].append(writer.path)
            writer.__enter__()
        writers["text"].add_word_table(words, vectors)
        for i in range(shard * per_shard, min(args.videos, (shard + 1) * per_shard)):
            video_id = f"v{i:06d}"
            n_captions = max(1, int(args.seconds / args.caption_seconds))
            starts = np.arange(n_captions, dtype=np.float32) * args.caption_seconds
            tokens = rng.integers(0, args.vocabulary, size=n_captions * 8).astype(np.int32)
            writers["video"].add(video_id, rng.random((args.seconds, args.video_dim), dtype=np.float32).astype(np.float16))
            writers["audio"].add(video_id, rng.normal(size=(40, args.seconds * 100)).astype(np.float16))
            writers["text"].add(video_id, {"token_ids": tokens, "offsets": np.arange(0, len(tokens) + 1, 8),
                                           "start": starts, "end": starts + args.caption_seconds})
        for writer in writers.values():
            writer.__exit__(None, None, None)
    return paths


def settings_for(args: argparse.Namespace) -> dict:
    training = {
        "embd_dim": args.embd_dim, "video_dim": args.video_dim, "word_dim": args.word_dim, "n_pair": args.n_pair,
        "min_time": 10.0, "max_words": 20, "audio_frames": args.audio_frames, "batch_size": args.batch_size,
        "epochs": 1, "lr": 1e-4, "optimizer": "adam", "warmup_steps": 0, "schedule": "constant", "margin": 0.001,
        "clusters": args.clusters, "queue_batches": 20, "video_features": ["2d"], "kmeans_iters": 20, "recon_size": args.recon_size,
        "num_workers": args.num_workers, "device": args.device, "amp": args.amp, "seed": 0, "tensorboard": False,
    }
    if args.audio_widths:
        training["audio_widths"] = args.audio_widths
    term = {"enabled": True, "weight": 1.0}
    return {"pairs": args.pairs, "space": args.space, "training": training,
            "losses": {"mms": term, "clustering": term, "reconstruction": {"enabled": True, "weight": 50.0}}}


def timed_steps(trainer: Trainer, batches, steps: int) -> float:
    """Mean seconds per train_step over ``steps`` steps, the clock running from the first fetch."""
    synchronize = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    synchronize()
    started = time.perf_counter()
    for batch in itertools.islice(batches, steps):
        trainer.train_step(batch)
    synchronize()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--videos", type=int, default=128)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=120, help="length of every synthetic video")
    parser.add_argument("--caption-seconds", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=8, help="videos per step")
    parser.add_argument("--n-pair", type=int, default=8)
    parser.add_argument("--embd-dim", type=int, default=256)
    parser.add_argument("--video-dim", type=int, default=2048)
    parser.add_argument("--word-dim", type=int, default=300)
    parser.add_argument("--vocabulary", type=int, default=5000)
    parser.add_argument("--audio-frames", type=int, default=1000)
    parser.add_argument("--audio-widths", type=int, nargs=5, default=None,
                        help="ResDAVEnet widths (default: MCN's 128 128 256 512 1024)")
    parser.add_argument("--recon-size", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=16)
    parser.add_argument("--pairs", nargs="+", default=["tv", "ta", "va"])
    parser.add_argument("--space", choices=["shared", "per_pair"], default="shared")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (worker start, allocator)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating loader / memory measurements")
    parser.add_argument("--save-rates", nargs="?", const=DEFAULT_RATES_FILE, default=None, type=Path, metavar="YAML",
                        help=f"merge the step time into this rates file (default {DEFAULT_RATES_FILE})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        paths = write_shards(root, args)
        print(f"wrote {args.videos} synthetic videos in {time.perf_counter() - started:.1f} s")
        settings = settings_for(args)
        training = settings["training"]
        modalities = modalities_of(args.pairs)
        dataset = ClipDataset(shards=paths, modalities=modalities, n_pair=args.n_pair, min_time=training["min_time"],
                              max_words=training["max_words"], audio_frames=args.audio_frames, seed=0)
        trainer = Trainer(settings, dataset, root / "out", "bench")
        trainer.model.train()
        needed = max(args.warmup + args.steps, args.steps)
        if trainer.steps_per_epoch < needed:
            raise SystemExit(f"{trainer.steps_per_epoch} steps per epoch; need --videos >= {needed * args.batch_size}")

        # Alternate the two feeds so drifting machine load hits both alike; report medians over rounds.
        # 1. Fed by the DataLoader: fresh workers each round, untimed warm-up steps, then the timed steps
        #    (more than the workers can prefetch, so the steady state is measured).
        # 2. The same train_step fed by batches already in memory (pinned on CUDA, as the loader's).
        batches = list(itertools.islice(iter(trainer.loader), args.steps))
        if trainer.device.type == "cuda":
            batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
        loader_times, memory_times = [], []
        for round_ in range(args.rounds):
            loader = iter(trainer.loader)
            timed_steps(trainer, loader, args.warmup)
            loader_times.append(timed_steps(trainer, loader, args.steps))
            del loader
            memory_times.append(timed_steps(trainer, iter(batches), args.steps))
            print(f"round {round_ + 1}: loader {loader_times[-1] * 1000:.1f} ms, memory {memory_times[-1] * 1000:.1f} ms")
        loader_step, memory_step = float(np.median(loader_times)), float(np.median(memory_times))

        # The loader alone (no training): how much of a step the workers' reading and cutting costs.
        loader = iter(trainer.loader)
        next(loader)
        started = time.perf_counter()
        for _ in itertools.islice(loader, args.steps):
            pass
        loader_alone = (time.perf_counter() - started) / args.steps
        del loader

    clips = trainer.videos_per_step * args.n_pair
    print(f"device {trainer.device}{' (AMP)' if trainer.amp else ''}, {trainer.videos_per_step} videos x "
          f"{args.n_pair} clips = {clips} clips/step, embd_dim {args.embd_dim}, pairs {','.join(args.pairs)}, "
          f"{args.num_workers} workers, torch threads {torch.get_num_threads()}")
    print(f"step fed by HDF5 DataLoader : {loader_step * 1000:8.1f} ms")
    print(f"step fed from memory        : {memory_step * 1000:8.1f} ms")
    print(f"DataLoader alone, per batch : {loader_alone * 1000:8.1f} ms")
    print(f"ratio loader / memory       : {loader_step / memory_step:8.3f}   (goal <= 1.10)")
    if args.save_rates:
        import platform

        # GPU and CPU steps are kept apart: the estimate prefers a GPU's and says which one it used
        kind = "gpu" if trainer.device.type == "cuda" else "cpu"
        device = (torch.cuda.get_device_name(trainer.device) if kind == "gpu"
                  else f"{platform.machine()}, {torch.get_num_threads()} threads")
        flops = sum(train_step_flops(settings, {**training, "batch_size": trainer.videos_per_step}))
        path = save_rates(args.save_rates, {f"train_step_s_{kind}": loader_step, f"train_step_flops_{kind}": flops,
                                            f"train_step_machine_{kind}": f"{platform.node()} ({device})"})
        print(f"rates saved to {path}: {loader_step:.4g} s/step at {flops / 1e12:.4g} TFLOP/step ({kind})")


if __name__ == "__main__":
    main()
