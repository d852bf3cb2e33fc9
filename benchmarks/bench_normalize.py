"""How fast one video normalizes: realtime factor at the configured x264 preset vs ultrafast.

    .venv/bin/python benchmarks/bench_normalize.py [--config config.yaml] [--seconds 20] [--repeats 2]

Makes a 640x360 30 fps clip with a tone (lavfi testsrc2 + sine, about what a 360p download looks
like), normalizes it with ``normalize.normalize_video`` exactly as the stage does (ffmpeg + ffprobe
verification included), and prints seconds of video per second of wall time (the best of
``--repeats`` runs), output sizes, and the ratios between the two presets, all from this one run.
Synthetic noise is harder to encode than real instructional footage: treat the speeds as lower bounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mcnflow.core.config import load_config
from mcnflow.normalize import NormalizeSettings, normalize_video

REPO = Path(__file__).resolve().parents[1]


def make_clip(path: Path, seconds: float) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=s=640x360:r=30:d={seconds}",
                    "-f", "lavfi", "-i", f"sine=f=440:r=44100:d={seconds}",
                    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "600k", "-c:a", "aac", "-shortest",
                    str(path)], check=True)
    return path


def best_time(source: Path, output: Path, settings: NormalizeSettings, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        output.unlink(missing_ok=True)
        start = time.perf_counter()
        normalize_video(source, output, settings)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None, metavar="YAML",
                        help="config file(s) whose normalize section is measured (default: config.yaml)")
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length")
    parser.add_argument("--repeats", type=int, default=2, help="runs per preset; the fastest counts")
    args = parser.parse_args()

    configured = NormalizeSettings.from_mapping(load_config(args.config or [REPO / "config.yaml"])["normalize"])
    presets = {f"configured ({configured.preset})": configured,
               "ultrafast": dataclasses.replace(configured, preset="ultrafast")}

    with tempfile.TemporaryDirectory(prefix="bench-normalize-") as work:
        work = Path(work)
        source = make_clip(work / "clip.mp4", args.seconds)
        print(f"clip: {args.seconds:g} s 640x360 30 fps + 44.1 kHz tone; output {configured.width}x"
              f"{configured.height} @ {configured.fps:g} fps, {configured.resize_mode}, threads={configured.threads}")
        results = {}
        for name, settings in presets.items():
            output = work / f"{settings.preset}.mp4"
            seconds = best_time(source, output, settings, args.repeats)
            results[name] = (seconds, output.stat().st_size)
            print(f"{name:>24}: {seconds:6.2f} s wall, {args.seconds / seconds:5.2f}x realtime, "
                  f"{output.stat().st_size / 1024:7.0f} KiB")

    (base_time, base_size), (fast_time, fast_size) = results.values()
    print(f"ultrafast / configured: {base_time / fast_time:.2f}x faster, {fast_size / base_size:.2f}x larger files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
