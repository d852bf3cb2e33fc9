"""CPU cost of one decode per video (mcnflow media) against today's chain, on the same input videos.

Makes the input with ffmpeg lavfi (default 60 s, 640x360 30 fps H.264 at 500 kb/s: testsrc2 + noise,
a 440 Hz tone in stereo AAC: about a 360p download), then, in ONE run, measures CPU seconds
(user + sys of the child processes, ``resource.getrusage(RUSAGE_CHILDREN)``: ffmpeg and ffprobe) per
minute of video, the median of ``--repeats`` runs each, for:

  chain      today's chain: ``normalize_video`` (x264, the configured preset; ffprobe verification),
             then the normalized file decoded again for the 1 fps frames (``frames.decode_frames``)
             and again for the 16 kHz audio (``audio.decode_audio``)
  keep       decode once with normalize.keep true: one ffmpeg writes the normalized .mp4 (aligned
             keyframes) and pipes the 1 fps frames and the 16 kHz audio; the .mp4 verified by ffprobe
  no-keep    decode once with normalize.keep false: nothing encoded, frames and audio piped
  bare       ``ffmpeg -threads 1 -i input -f null -`` (decode only, video and audio)
  keep+3d, no-keep+3d   the same with the 24 fps frames of the 3D model piped too (when the config's
             experiments read 3D features)

(the variants take turns, round by round) and prints the ratios (targets on this 2-core machine: no-keep <= 0.25 x chain and <= 1.3 x bare;
keep < chain). The parent's own CPU (reading the pipes in Python threads) is printed beside it.
Also printed: log-mel CPU-s per minute (numpy, in this process), the kept file's size with and without
aligned keyframes, and a keyframe-only decode of it against a full decode + fps=1.

    .venv/bin/python benchmarks/bench_decode_once.py [--seconds 60] [--repeats 3] [--save-rates]

``--save-rates`` merges the measured rates into benchmarks/rates.yaml (read by ``mcnflow estimate``).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mcnflow.core.config import load_config  # noqa: E402
from mcnflow.core.media_probe import probe  # noqa: E402
from mcnflow.core.plan import Plan  # noqa: E402
from mcnflow.features import audio as audio_module  # noqa: E402
from mcnflow.features import frames as frames_module  # noqa: E402
from mcnflow.features.logmel import log_mel  # noqa: E402
from mcnflow.media.decode import AudioTap, DecodeRun, VideoTap, collect  # noqa: E402
from mcnflow.normalize import NormalizeSettings, normalize_video, probe_source, verify_file  # noqa: E402

RATES_FILE = REPO / "benchmarks" / "rates.yaml"


def make_input(path: Path, seconds: float) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=s=640x360:r=30:d={seconds},noise=alls=20:allf=t",
                    "-f", "lavfi", "-i", f"sine=f=440:r=44100:d={seconds}", "-ac", "2",
                    "-c:v", "libx264", "-preset", "veryfast", "-b:v", "500k", "-c:a", "aac", "-shortest",
                    str(path)], check=True)
    return path


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(label: str, work, repeats: int) -> dict:
    return measure_all({label: work}, repeats)[0]


def measure_all(variants: dict, repeats: int) -> list[dict]:
    """Median CPU of each variant; the variants take turns round by round, so a change in the load of
    a shared machine hits all of them alike."""
    samples = {label: ([], [], []) for label in variants}
    for _ in range(repeats):
        for label, work in variants.items():
            children, own, wall = samples[label]
            c0, s0, t0 = cpu_children(), cpu_self(), time.perf_counter()
            work()
            children.append(cpu_children() - c0)
            own.append(cpu_self() - s0)
            wall.append(time.perf_counter() - t0)
    return [{"label": label, "children": statistics.median(c), "self": statistics.median(o),
             "wall": statistics.median(w)} for label, (c, o, w) in samples.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="input length")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the median counts")
    parser.add_argument("--config", nargs="+", default=[str(REPO / "config.yaml")], help="config file(s)")
    parser.add_argument("--save-rates", action="store_true", help=f"merge the measured rates into {RATES_FILE}")
    args = parser.parse_args()

    plan = Plan(load_config(args.config))
    media = plan.settings("media")
    settings = NormalizeSettings.from_mapping(media["normalize"])
    video, audio = dict(media["video"]), dict(media["audio"])
    minutes = args.seconds / 60

    with tempfile.TemporaryDirectory(prefix="bench-decode-once-") as work:
        work = Path(work)
        source = make_input(work / "input.mp4", args.seconds)
        info = probe(source)
        width, height = frames_module.output_size(settings.width, settings.height, int(video["short_side"]))
        taps = [VideoTap("video", float(video["fps"]), size=(width, height)),
                AudioTap("audio", int(audio["sample_rate"]))]
        taps_3d = None
        if "video3d" in media:  # an experiment reads 3D features: the media job also pipes 24 fps frames
            v3 = media["video3d"]
            taps_3d = [*taps, VideoTap("video3d", float(v3["fps"]), size=frames_module.output_size(
                settings.width, settings.height, int(v3["short_side"])))]
        normalized = work / "normalized.mp4"

        def chain():
            normalized.unlink(missing_ok=True)
            normalize_video(source, normalized, settings)
            frames_module.decode_frames(normalized, float(video["fps"]), int(video["short_side"]))
            audio_module.decode_audio(normalized, int(audio["sample_rate"]))

        def once(keep: bool, with_taps=taps):
            def run():
                checked = probe_source(source)  # as the stage does: ffprobe of the download
                if keep:
                    kept = work / "kept.mp4"
                    kept.unlink(missing_ok=True)
                    got = collect(DecodeRun(checked, settings, with_taps, encode_to=kept))
                    verify_file(kept, checked, settings)
                else:
                    got = collect(DecodeRun(checked, settings, with_taps))
                assert len(got["video"]) == frames_module.expected_frames(args.seconds, float(video["fps"]))
            return run

        def bare():
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-i", str(source), "-f", "null", "-"],
                           check=True)

        variants = {"chain": chain, "keep": once(True), "no-keep": once(False), "bare": bare}
        if taps_3d is not None:
            variants.update({"keep+3d": once(True, taps_3d), "no-keep+3d": once(False, taps_3d)})
        results = measure_all(variants, args.repeats)
        by = {r["label"]: r for r in results}

        # log-mel of the decoded audio, in this process
        samples = collect(DecodeRun(info, settings, [taps[1]]))["audio"]
        t0 = time.process_time()
        log_mel(samples, int(audio["sample_rate"]), **{k: audio[k] for k in
                                                       ("preemphasis", "window_ms", "hop_ms", "n_mels", "fmin", "fmax",
                                                        "top_db")})
        logmel_s = time.process_time() - t0

        # the kept file: size with and without aligned keyframes, keyframe-only re-extraction
        plain = work / "plain.mp4"
        normalize_video(source, plain, dataclasses.replace(settings, align_keyframes=False))
        aligned = work / "kept.mp4"
        if not aligned.exists():
            collect(DecodeRun(info, settings, taps, encode_to=aligned))
        full = measure("full decode + fps", lambda: frames_module.decode_frames(
            aligned, float(video["fps"]), int(video["short_side"])), args.repeats)
        keys = measure("keyframes only", lambda: frames_module.decode_frames(
            aligned, float(video["fps"]), int(video["short_side"]), keyframes_only=True), args.repeats)
        sizes = {"aligned": aligned.stat().st_size, "plain": plain.stat().st_size}
        same = np.array_equal(frames_module.decode_frames(aligned, float(video["fps"]), int(video["short_side"])).frames,
                              frames_module.decode_frames(aligned, float(video["fps"]), int(video["short_side"]),
                                                          keyframes_only=True).frames)

    print(f"input: {args.seconds:g} s 640x360 30 fps H.264 500 kb/s + AAC stereo; normalize preset {settings.preset}, "
          f"threads {settings.threads}; median of {args.repeats}; machine: {platform.node()} ({platform.machine()})")
    print(f"{'variant':<10}{'child CPU-s/min':>17}{'parent CPU-s/min':>18}{'wall s/min':>12}")
    for r in results:
        print(f"{r['label']:<10}{r['children'] / minutes:>17.2f}{r['self'] / minutes:>18.2f}{r['wall'] / minutes:>12.2f}")
    chain_cpu, keep_cpu, nokeep_cpu, bare_cpu = (by[k]["children"] for k in ("chain", "keep", "no-keep", "bare"))
    print(f"ratio no-keep / chain = {nokeep_cpu / chain_cpu:.3f} (target <= 0.25)")
    print(f"ratio no-keep / bare  = {nokeep_cpu / bare_cpu:.3f} (target <= 1.3)")
    print(f"ratio keep / chain    = {keep_cpu / chain_cpu:.3f} (target < 1: the two re-decodes saved)")
    print(f"ratio keep / bare     = {keep_cpu / bare_cpu:.3f}")
    print(f"ratio (no-keep + parent) / chain = {(nokeep_cpu + by['no-keep']['self']) / chain_cpu:.3f} "
          "(counting the Python pipe readers too)")
    if "no-keep+3d" in by:
        print(f"ratio no-keep+3d / chain = {by['no-keep+3d']['children'] / chain_cpu:.3f} (the 24 fps 3D frames "
              "from the same decode; today's chain would decode a third time for them)")
    print(f"log-mel: {logmel_s / minutes:.3f} CPU-s per minute of audio (numpy, one process)")
    print(f"kept file: aligned keyframes {sizes['aligned'] / 1e6:.2f} MB vs x264's own {sizes['plain'] / 1e6:.2f} MB "
          f"(ratio {sizes['aligned'] / sizes['plain']:.3f})")
    print(f"re-extraction from the kept file: keyframes only {keys['children'] / minutes:.2f} vs full decode "
          f"{full['children'] / minutes:.2f} CPU-s/min (ratio full / keyframes {full['children'] / keys['children']:.2f}); "
          f"same frames: {same}")
    if args.save_rates:
        from mcnflow.estimate import save_rates

        path = save_rates(RATES_FILE, {
            "machine": f"{platform.node()} ({platform.machine()})",
            "chain_cpu_s_per_min": chain_cpu / minutes, "media_keep_cpu_s_per_min": keep_cpu / minutes,
            "media_nokeep_cpu_s_per_min": nokeep_cpu / minutes, "bare_decode_cpu_s_per_min": bare_cpu / minutes,
            "logmel_cpu_s_per_min": logmel_s / minutes,
            "normalized_bytes_per_min": sizes["aligned"] / minutes,
            **({"media_keep_3d_cpu_s_per_min": by["keep+3d"]["children"] / minutes,
                "media_nokeep_3d_cpu_s_per_min": by["no-keep+3d"]["children"] / minutes} if "keep+3d" in by else {}),
        })
        print(f"rates saved to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
