"""How close does `mcnflow media` (its 2D features, normalize.keep false) come to the model's own speed?

Makes N synthetic 454x256 @ 30 fps videos (ffmpeg lavfi, like normalized videos), then in ONE run:
  1. end to end: the real media job (decode workers + cross-video batching + HDF5 + ledgers);
  2. model only: the same encoder on the same frames, already decoded and held in memory as uint8,
     in batches of --batch-size (host->device copy, preprocessing, forward, copy back included).
Both use the same, already built and warmed-up encoder. The goal is end_to_end / model_only <= 1.15:
decoding must stay hidden behind the model.

    .venv/bin/python benchmarks/bench_video_extraction.py --videos 4 --seconds 3            # CPU, small
    .venv/bin/python benchmarks/bench_video_extraction.py --device cuda --videos 64 --seconds 60 \
        --decode-workers 14 --batch-size 64                                                  # GPU machine
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mcnflow.features import frames as frames_module
from mcnflow.core.config import load_config
from mcnflow.core.device import resolve_device
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, write_ledger
from mcnflow.core.plan import Plan
from mcnflow.features.resnet import FrameEncoder, ResNet152Weights
from mcnflow.media.stage import Outputs, media_shard

REPO = Path(__file__).resolve().parents[1]

# lavfi sources with moving, varied content (uniform colours would decode unrealistically fast)
SOURCES = ("testsrc2=s=454x256:r=30", "mandelbrot=s=454x256:r=30", "life=s=454x256:r=30:ratio=0.3:mold=8",
           "rgbtestsrc=s=454x256:r=30")


def make_videos(directory: Path, n: int, seconds: float) -> list[dict]:
    rows = []
    for i in range(n):
        path = directory / f"v{i:04d}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", SOURCES[i % len(SOURCES)], "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "23",
                        "-pix_fmt", "yuv420p", str(path)], check=True)
        rows.append({"video_id": f"v{i:04d}", "status": "ok", "message": "", "attempts": 1, "path": str(path)})
    write_ledger(directory / "download.tsv", rows, DOWNLOAD_COLUMNS)
    return rows


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BusyTimer:
    """Wraps the encoder and adds up the time the model is busy (CUDA events on GPU, wall time on CPU).

    In the end-to-end run, wall time minus busy time is the time the model waited for the pipeline;
    unlike the ratio, that does not depend on how busy the machine's other processes keep the CPU.
    """

    def __init__(self, encoder: FrameEncoder):
        self.encoder = encoder
        self.cpu_seconds = 0.0
        self.events: list = []

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def __call__(self, frames):
        if self.encoder.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = self.encoder(frames)
            end.record()
            self.events.append((start, end))
            return out
        start = time.perf_counter()
        out = self.encoder(frames)
        self.cpu_seconds += time.perf_counter() - start
        return out

    def busy_seconds(self) -> float:
        if self.events:
            torch.cuda.synchronize()
        return self.cpu_seconds + sum(a.elapsed_time(b) for a, b in self.events) / 1000


def model_only(encoder: FrameEncoder, frames: torch.Tensor, batch_size: int) -> float:
    """Seconds to encode ``frames`` (uint8, host) batch by batch, results back on the host."""
    synchronize(encoder.device)
    start = time.perf_counter()
    outputs = [encoder(frames[i:i + batch_size]).to("cpu", non_blocking=True)
               for i in range(0, len(frames), batch_size)]
    synchronize(encoder.device)
    elapsed = time.perf_counter() - start
    assert sum(len(o) for o in outputs) == len(frames)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--weights", default="none", help="none | imagenet | a state-dict path")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--fps", type=float, default=1)
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3, help="alternating end-to-end / model-only runs")
    parser.add_argument("--workdir", help="keep the videos and outputs here (default: a temp dir)")
    args = parser.parse_args()

    config = load_config([REPO / "config.yaml"], {
        "normalize": {"keep": False}, "training": {"video_features": ["2d"], "video_dim": 2048},
        "features": {"video": {"fps": args.fps, "short_side": args.short_side, "weights": args.weights,
                               "batch_size": args.batch_size, "device": args.device,
                               "decode_workers": args.decode_workers}}})
    settings = Plan(config).settings("media")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        rows = make_videos(work, args.videos, args.seconds)
        print(f"made {args.videos} videos of {args.seconds:g} s in {time.perf_counter() - t0:.1f} s")

        device = resolve_device(args.device, "--device")
        encoder = FrameEncoder(ResNet152Weights.resolve(args.weights, 0), device, True)
        decoded = [frames_module.decode_frames(r["path"], args.fps, args.short_side).frames for r in rows]
        frames = torch.from_numpy(np.concatenate(decoded))
        if device.type == "cuda":
            frames = frames.pin_memory()
        # warm-up on both batch shapes used below (cuDNN / oneDNN pick kernels on first use)
        for n in {min(args.batch_size, len(frames)), len(frames) % args.batch_size or args.batch_size}:
            encoder(frames[:n]).cpu()

        # alternate the two measurements so load from other processes hits both alike
        end_to_end, model, busy = [], [], []
        for repeat in range(args.repeats):
            out = work / f"repeat-{repeat}"
            timer = BusyTimer(encoder)
            start = time.perf_counter()
            features = {name: (out / f"{name}.h5", out / f"{name}.tsv") for name in ("video", "audio")}
            ledger = media_shard(work / "download.tsv", "bench", 0, Outputs(out / "normalize.tsv", None, features),
                                 settings, progress=False, encoders={"video": timer})["video"]
            end_to_end.append(time.perf_counter() - start)
            busy.append(timer.busy_seconds())
            n_rows = sum(int(r["length"]) for r in ledger)
            assert n_rows == len(frames), (n_rows, len(frames))
            model.append(model_only(encoder, frames, args.batch_size))
            print(f"repeat {repeat}: end to end {end_to_end[-1]:.2f} s (model busy {busy[-1]:.2f} s), "
                  f"model only {model[-1]:.2f} s, ratio {end_to_end[-1] / model[-1]:.3f}")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores, " \
        f"{torch.get_num_threads()} torch threads)"
    frame_size = "x".join(map(str, frames.shape[2:0:-1]))
    print(f"device: {name}; precision: {encoder.precision}; weights: {encoder.weights.description}")
    print(f"{args.videos} videos x {args.seconds:g} s -> {len(frames)} frames of {frame_size}, "
          f"batch {args.batch_size}, {args.decode_workers} decode workers")
    e2e, only = float(np.median(end_to_end)), float(np.median(model))
    print(f"end to end : {e2e:8.2f} s  {len(frames) / e2e:9.1f} frames/s  (median of {args.repeats})")
    print(f"model only : {only:8.2f} s  {len(frames) / only:9.1f} frames/s  (median of {args.repeats})")
    print(f"ratio end_to_end_time / model_only_time = {e2e / only:.3f}  (goal <= 1.15); per repeat: "
          + ", ".join(f"{a / b:.3f}" for a, b in zip(end_to_end, model)))
    print("model idle during end to end (waiting for decode/batching/HDF5): per repeat "
          + ", ".join(f"{(a - b) / a:.1%}" for a, b in zip(end_to_end, busy)))
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (others' processes distort CPU timings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
