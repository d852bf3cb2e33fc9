#!/usr/bin/env bash
# One command on a GPU machine (under 5 minutes on one H100/H200-class GPU and ~16 cores):
#   bash benchmarks/gpu_check.sh [--save-rates]
# prints, from one run each:
#   1. 2D ResNet-152 extraction: end-to-end frames/s of `mcnflow media` (decode once, normalize.keep
#      false) with CPU decode and with GPU decode (media.decode: cuda, when torchcodec imports) against
#      model-only frames/s (the same encoder on the same frames held in memory), eager and compiled;
#   2. 3D ResNeXt-101 (when src/mcnflow/features/resnext3d.py exists): end-to-end clips/s of the same
#      media job when an experiment reads 3D features (training.video_features [2d, 3d]) against model-only clips/s;
#   3. the training step at the full config.yaml sizes fed by the real HDF5 DataLoader vs in-memory
#      batches (benchmarks/bench_train_step.py).
# --save-rates merges the measured rates into benchmarks/rates.yaml for `mcnflow estimate`.
# Environment: PYTHON (default .venv/bin/python, else python3), GPU_CHECK_VIDEOS (default 48),
# GPU_CHECK_SECONDS (default 60), GPU_CHECK_WORKERS (decode workers, default cores - 2),
# GPU_CHECK_COMPILE (1: also time torch.compile, default 1), GPU_CHECK_TRAIN (1: run 3., default 1),
# GPU_CHECK_DEVICE (default cuda; cpu only checks the script itself on a machine without a GPU:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_VIDEOS=2 GPU_CHECK_SECONDS=2 GPU_CHECK_TRAIN=0 bash benchmarks/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
SAVE_RATES=0
[ "${1:-}" = "--save-rates" ] && SAVE_RATES=1

echo "== machine"
nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found"
"$PYTHON" - <<'EOF'
import os, torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, "
      f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}, cores: {os.cpu_count()}")
try:
    import torchcodec
    print(f"torchcodec {torchcodec.__version__}")
except Exception as exc:  # noqa: BLE001
    print(f"torchcodec: not importable ({type(exc).__name__}: {exc}); GPU decode is skipped "
          "(pip install torchcodec, the build matching torch)")
EOF

echo "== 2D / 3D extraction: end to end vs model only"
GPU_CHECK_SAVE_RATES=$SAVE_RATES timeout 240 "$PYTHON" - <<'EOF'
import json, os, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from mcnflow.core.config import load_config
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, write_ledger
from mcnflow.core.media_probe import probe
from mcnflow.core.plan import Plan
from mcnflow.features.resnet import FrameEncoder, ResNet152Weights
from mcnflow.media.decode import DecodeRun, collect
from mcnflow.media.stage import Outputs, build_consumers, media_settings, media_shard

DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")
assert DEVICE == "cpu" or torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU (GPU_CHECK_DEVICE=cpu: script check only)"
N = int(os.environ.get("GPU_CHECK_VIDEOS", 48))
SECONDS = float(os.environ.get("GPU_CHECK_SECONDS", 60))
WORKERS = int(os.environ.get("GPU_CHECK_WORKERS", max(1, (os.cpu_count() or 4) - 2)))
HAS_3D = Path("src/mcnflow/features/resnext3d.py").exists()
try:
    import torchcodec  # noqa: F401
    HAS_TORCHCODEC = True
except Exception:  # noqa: BLE001
    HAS_TORCHCODEC = False
cuda = torch.device(DEVICE)
sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
rates = {}
SOURCES = ("testsrc2", "testsrc", "life=ratio=0.3:mold=8", "rgbtestsrc")  # cheap to generate, moving

def make(path, i):
    source = SOURCES[i % len(SOURCES)]
    sep = ":" if "=" in source else "="
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"{source}{sep}s=640x360:r=30:d={SECONDS}", "-f", "lavfi", "-i", f"sine=f={220 + 20 * i}:d={SECONDS}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "500k", "-c:a", "aac", "-shortest", str(path)],
                   check=True)
    return path

def settings_for(decode="cpu", video3d=False, compile=False):
    config = load_config(["config.yaml"], {"normalize": {"keep": False}, "media": {"decode": decode},
                                           "training": {"video_features": ["2d", "3d"] if video3d else ["2d"],
                                                        "video_dim": 4096 if video3d else 2048},
                                           "features": {"video": {"weights": "none", "device": DEVICE, "batch_size": 64,
                                                                  "decode_workers": WORKERS, "compile": compile},
                                                        "video3d": {"weights": "none", "device": DEVICE,
                                                                    "decode_workers": WORKERS}}})
    return json.loads(json.dumps(Plan(config).settings("media")))

with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    started = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        videos = list(pool.map(lambda i: make(root / f"v{i:04d}.mp4", i), range(N)))
    print(f"made {N} videos of {SECONDS:g} s (640x360 30 fps) in {time.perf_counter() - started:.1f} s; "
          f"{WORKERS} decode workers")
    ledger = root / "download.tsv"
    write_ledger(ledger, [dict(video_id=f"v{i:04d}", status="ok", path=str(p), message="", attempts=1)
                          for i, p in enumerate(videos)], DOWNLOAD_COLUMNS)

    # model only: the same frames in memory, pinned, in batches of 64 (copy, preprocessing, forward, copy back)
    base = media_settings(settings_for())
    consumer = build_consumers(base)[0]
    frames = [torch.from_numpy(collect(DecodeRun(probe(v), base.normalize, [consumer.tap()]))["video"]) for v in videos[:8]]
    frames = torch.cat(frames)
    size = min(64, len(frames))
    pin = (lambda t: t.pin_memory()) if DEVICE == "cuda" else (lambda t: t)
    def model_only(encoder, repeats=3):
        batches = [pin(frames[i:i + size]) for i in range(0, len(frames) - size + 1, size)]
        for b in batches[:2]:
            encoder(b)
        sync()
        t0 = time.perf_counter()
        for _ in range(repeats):
            outs = [encoder(b) for b in batches]
            [o.cpu() for o in outs]
        sync()
        return repeats * size * len(batches) / (time.perf_counter() - t0)
    eager = FrameEncoder(ResNet152Weights.random(0), cuda, True, batch_size=64)
    rate_eager = model_only(eager)
    print(f"2D model only (bf16 autocast, channels_last), eager   : {rate_eager:8.0f} frames/s "
          f"({tuple(frames.shape[1:3])} frames, batches of {size})")

    def end_to_end(decode, video3d=False):
        out = root / f"out-{decode}-{video3d}"
        shutil.rmtree(out, ignore_errors=True)
        features = {"video": (out / "v.h5", out / "v.tsv"), "audio": (out / "a.h5", out / "a.tsv")}
        if video3d:
            features["video3d"] = (out / "3d.h5", out / "3d.tsv")
        t0 = time.perf_counter()
        rows = media_shard(ledger, "gpu", 0, Outputs(out / "n.tsv", None, features),
                           settings_for(decode, video3d), progress=False, encoders={"video": eager})
        wall = time.perf_counter() - t0
        total = {name: sum(int(r["length"]) for r in rows[name]) for name in features}
        return wall, total
    wall, total = end_to_end("cpu")
    e2e_cpu = total["video"] / wall
    rates["resnet152_gpu_frames_per_s"] = e2e_cpu
    print(f"2D end to end, CPU decode (mcnflow media, keep false)  : {e2e_cpu:8.0f} frames/s "
          f"({total['video']} frames in {wall:.1f} s; ratio end-to-end / model-only {e2e_cpu / rate_eager:.2f})")
    if HAS_TORCHCODEC:
        try:
            wall, total = end_to_end("cuda")
            print(f"2D end to end, GPU decode (media.decode cuda)          : {total['video'] / wall:8.0f} frames/s "
                  f"(ratio to model only {total['video'] / wall / rate_eager:.2f})")
        except Exception as exc:  # noqa: BLE001
            print(f"2D end to end, GPU decode: FAILED ({type(exc).__name__}: {exc})")
    else:
        print("2D end to end, GPU decode: skipped (torchcodec not importable)")

    if HAS_3D:
        from mcnflow.features.resnext3d import ClipEncoder, ResNeXt3DWeights
        clip_encoder = ClipEncoder(ResNeXt3DWeights.random(0), cuda, True, 64)
        count = 64 if DEVICE == "cuda" else 1
        clips = pin(torch.randint(0, 256, (count, 16, 112, 198, 3), dtype=torch.uint8))
        clip_encoder(clips); sync()
        t0 = time.perf_counter()
        for _ in range(3):
            clip_encoder(clips).cpu()
        sync()
        model_3d = 3 * count / (time.perf_counter() - t0)
        rates["resnext3d_gpu_clips_per_s"] = model_3d
        print(f"3D model only (ResNeXt-101, 16x112x112 clips, bf16)    : {model_3d:8.0f} clips/s")
        try:
            wall, total = end_to_end("cpu", video3d=True)
            print(f"3D end to end, CPU decode (2D and 3D from one decode) : {total['video3d'] / wall:8.0f} clips/s "
                  f"(ratio to model only {total['video3d'] / wall / model_3d:.2f}; 2D {total['video'] / wall:.0f} frames/s)")
        except Exception as exc:  # noqa: BLE001
            print(f"3D end to end: FAILED ({type(exc).__name__}: {exc})")
    else:
        print("3D: skipped (src/mcnflow/features/resnext3d.py not found)")

if os.environ.get("GPU_CHECK_SAVE_RATES") == "1":
    import platform
    from mcnflow.estimate import save_rates
    rates["machine"] = f"{platform.node()} ({torch.cuda.get_device_name(0)})"
    print(f"rates saved to {save_rates('benchmarks/rates.yaml', rates)}")
EOF

if [ "${GPU_CHECK_COMPILE:-1}" = "1" ]; then
  echo "== 2D model only with torch.compile (features.video.compile: true)"
  timeout 150 "$PYTHON" - <<'EOF' || echo "torch.compile: did not finish within 150 s (compile time included)"
import os, time, torch
from mcnflow.features.resnet import FrameEncoder, ResNet152Weights
device = torch.device(os.environ.get("GPU_CHECK_DEVICE", "cuda"))
sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
batch = 64 if device.type == "cuda" else 2
frames = torch.randint(0, 256, (batch, 224, 398, 3), dtype=torch.uint8)
frames = frames.pin_memory() if device.type == "cuda" else frames
rates = {}
for compile in (False, True):
    encoder = FrameEncoder(ResNet152Weights.random(0), device, True, compile=compile, batch_size=batch)
    t0 = time.perf_counter(); encoder(frames); sync(); first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(5):
        encoder(frames).cpu()
    sync()
    rates[compile] = 5 * batch / (time.perf_counter() - t0)
    print(f"{'compiled' if compile else 'eager   '}: {rates[compile]:8.0f} frames/s (first batch {first:.1f} s)")
print(f"ratio compiled / eager: {rates[True] / rates[False]:.2f}")
EOF
fi

if [ "${GPU_CHECK_TRAIN:-1}" = "1" ]; then
  echo "== training step at the config.yaml sizes: HDF5 DataLoader vs in-memory batches"
  # config.yaml training: batch 128 videos x 32 clips, embd 6144, recon 1024, 256 clusters, 1000 audio frames
  timeout 200 "$PYTHON" benchmarks/bench_train_step.py --device cuda --amp --videos 1024 --seconds 60 --shards 4 \
      --batch-size 128 --n-pair 32 --embd-dim 6144 --video-dim 2048 --audio-frames 1000 --recon-size 1024 \
      --clusters 256 --num-workers "${GPU_CHECK_WORKERS:-12}" --warmup 2 --steps 6 --rounds 2 \
      $( [ "$SAVE_RATES" = "1" ] && echo --save-rates )
fi
echo "== done (GPU numbers above are from this machine only)"
