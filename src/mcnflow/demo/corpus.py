"""``mcnflow demo-corpus``: an offline, synthetic "HowTo100M" with known ground truth.

Every video is a sequence of steps. A step shows one *ingredient* as a full-frame colour and plays one
*action* as a pure tone, and its ASR-like caption names both ("now we chop the tomato"). So:
video tells the ingredient, audio tells the action, and only text + video + audio together pin down a
step uniquely. The evaluation sets use every (action, ingredient) combination at most once per set,
so text -> video retrieval has exactly one right answer per query and chance is 1 / n_queries.

Written in the real formats, read back by the real readers:
  howto100m/HowTo100M_v1.csv, howto100m/caption.json, howto100m/videos/<id>.mp4  (served over HTTP)
  youcook2/youcookii_annotations_trainval.json, youcook2/videos/<id>.mp4         (served over HTTP)
  msrvtt/MSRVTT_JSFUSION_test.csv, msrvtt/videos/<id>.mp4                         (a local folder)
  crosstask/videos.csv, tasks_primary.txt, annotations/<task>_<id>.csv, videos/    (served over HTTP)
The ``gone`` ids are listed but have no file (the server answers 404); ``flaky`` ids fail once.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mcnflow.core.atomic import atomic_path, atomic_write
from mcnflow.core.config import add_settings_arguments, settings_from_args

log = logging.getLogger(__name__)

# ingredient -> frame colour (ffmpeg colour name); action -> tone (Hz). Octave-spaced tones land in
# clearly different mel bins; the colours stay separable even through a randomly initialised ResNet.
INGREDIENTS = {"tomato": "red", "cucumber": "green", "blueberry": "blue", "lemon": "yellow",
               "eggplant": "purple", "carrot": "orange", "coconut": "white", "radish": "magenta"}
ACTIONS = {"chop": 220, "stir": 440, "peel": 880, "wash": 1760}
FILLERS = ["now we", "okay so we", "next we", "then we", "and we", "so you"]

TRAIN_CORPUS, YOUCOOK_CORPUS, MSRVTT_CORPUS, CROSSTASK_CORPUS = "howto100m", "youcook2", "msrvtt", "crosstask"
CROSSTASK_TASKS = {"90001": "Make a fruit salad", "90002": "Prepare vegetables"}


@dataclass(frozen=True)
class Step:
    action: str
    ingredient: str


def planned_video_ids(demo: dict) -> dict[str, list[str]]:
    """The ids of each demo corpus, known from the settings alone (the workflow plans shards with it)."""
    return {
        TRAIN_CORPUS: [f"demo{i:07d}" for i in range(demo["train_videos"])],
        YOUCOOK_CORPUS: [f"yc2v{i:07d}" for i in range(demo["eval_videos"])],
        MSRVTT_CORPUS: [f"video{9000 + i}" for i in range(demo["msrvtt_videos"])],
        CROSSTASK_CORPUS: [f"ctsk{i:07d}" for i in range(demo.get("crosstask_videos", 0))],
    }


def _all_steps() -> list[Step]:
    return [Step(a, i) for a in ACTIONS for i in INGREDIENTS]


def _plan(demo: dict) -> dict[str, dict[str, list[Step]]]:
    """Which steps each video shows. Evaluation sets never repeat a combination within a set."""
    rng = random.Random(demo["seed"])
    ids = planned_video_ids(demo)
    steps_per_video = demo["steps_per_video"]
    combos = _all_steps()
    plan: dict[str, dict] = {TRAIN_CORPUS: {}, YOUCOOK_CORPUS: {}, MSRVTT_CORPUS: {}}
    for vid in ids[TRAIN_CORPUS]:
        plan[TRAIN_CORPUS][vid] = [rng.choice(combos) for _ in range(steps_per_video)]
    needed = len(ids[YOUCOOK_CORPUS]) * steps_per_video
    if needed > len(combos):
        raise ValueError(f"demo.eval_videos x demo.steps_per_video = {needed} exceeds the {len(combos)} "
                         "distinct (action, ingredient) combinations")
    if len(ids[MSRVTT_CORPUS]) > len(combos):
        raise ValueError(f"demo.msrvtt_videos must be at most {len(combos)}")
    unique = rng.sample(combos, needed)
    for n, vid in enumerate(ids[YOUCOOK_CORPUS]):
        plan[YOUCOOK_CORPUS][vid] = unique[n * steps_per_video:(n + 1) * steps_per_video]
    for vid, step in zip(ids[MSRVTT_CORPUS], rng.sample(combos, len(ids[MSRVTT_CORPUS]))):
        plan[MSRVTT_CORPUS][vid] = [step]
    # CrossTask: each task is a fixed ordered list of distinct steps; its videos show them in order.
    task_steps = dict(zip(CROSSTASK_TASKS, (rng.sample(combos, steps_per_video) for _ in CROSSTASK_TASKS)))
    plan[CROSSTASK_CORPUS] = {vid: (task, task_steps[task])
                              for vid, task in zip(ids[CROSSTASK_CORPUS], [*CROSSTASK_TASKS] * len(ids[CROSSTASK_CORPUS]))}
    return plan


def render_video(path: Path, steps: list[Step], step_seconds: float, size: str, fps: int,
                 with_audio: bool = True) -> None:
    """Encode the steps with ffmpeg lavfi sources into a small h264/aac mp4 (atomically)."""
    inputs: list[str] = []
    for step in steps:
        inputs += ["-f", "lavfi", "-i", f"color=c={INGREDIENTS[step.ingredient]}:s={size}:d={step_seconds}:r={fps}"]
    if with_audio:
        for step in steps:
            inputs += ["-f", "lavfi", "-i",
                       f"sine=frequency={ACTIONS[step.action]}:duration={step_seconds}:sample_rate=44100"]
    n = len(steps)
    video_in = "".join(f"[{i}:v]" for i in range(n))
    if with_audio:
        audio_in = "".join(f"[{n + i}:a]" for i in range(n))
        graph = f"{video_in}concat=n={n}:v=1:a=0[v];{audio_in}concat=n={n}:v=0:a=1[a]"
        maps = ["-map", "[v]", "-map", "[a]", "-c:a", "aac", "-b:a", "64k"]
    else:
        graph = f"{video_in}concat=n={n}:v=1:a=0[v]"
        maps = ["-map", "[v]"]
    with atomic_path(path) as tmp:
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs,
               "-filter_complex", graph, *maps, "-c:v", "libx264", "-preset", "ultrafast",
               "-pix_fmt", "yuv420p", "-f", "mp4", str(tmp)]
        subprocess.run(cmd, check=True)


def _caption(step: Step, rng: random.Random) -> str:
    return f"{rng.choice(FILLERS)} {step.action} the {step.ingredient}"


def _sentence(step: Step) -> str:
    return f"{step.action} the {step.ingredient}"


def make_demo_corpus(demo: dict, out_dir: str | Path) -> dict[str, int]:
    """Write the three demo corpora under ``out_dir``; return the number of video files per corpus."""
    out = Path(out_dir)
    rng = random.Random(demo["seed"] + 1)
    plan = _plan(demo)
    gone = set(demo.get("gone", []))
    step_s = demo["step_seconds"]
    no_audio = set(demo.get("no_audio", []))
    counts = {}

    # HowTo100M-format training corpus (16:9, 30 fps).
    train_dir = out / TRAIN_CORPUS
    captions: dict[str, dict[str, list]] = {}
    jobs: list[tuple[Path, list[Step], str, int, bool]] = []
    with atomic_write(train_dir / "HowTo100M_v1.csv") as handle:
        handle.write("video_id,category_1,category_2,rank,task_id\n")
        for rank, (vid, steps) in enumerate(plan[TRAIN_CORPUS].items(), start=1):
            handle.write(f"{vid},Food and Entertaining,Recipes,{rank},{100000 + rank}\n")
            captions[vid] = {"start": [k * step_s for k in range(len(steps))],
                             "end": [(k + 1) * step_s for k in range(len(steps))],
                             "text": [_caption(s, rng) for s in steps]}
            if vid not in gone:
                jobs.append((train_dir / "videos" / f"{vid}.mp4", steps, "640x360", 30, vid not in no_audio))
    with atomic_write(train_dir / "caption.json") as handle:
        json.dump(captions, handle)

    # YouCook2-format evaluation set with step segments (4:3 source, so normalization pads).
    yc_dir = out / YOUCOOK_CORPUS
    database = {}
    for vid, steps in plan[YOUCOOK_CORPUS].items():
        database[vid] = {
            "duration": len(steps) * step_s, "subset": "validation", "recipe_type": "demo",
            "video_url": f"https://www.youtube.com/watch?v={vid}",
            "annotations": [{"segment": [k * step_s, (k + 1) * step_s], "id": k, "sentence": _sentence(s)}
                            for k, s in enumerate(steps)],
        }
        jobs.append((yc_dir / "videos" / f"{vid}.mp4", steps, "480x360", 30, True))
    with atomic_write(yc_dir / "youcookii_annotations_trainval.json") as handle:
        json.dump({"database": database}, handle)

    # MSR-VTT-format evaluation set: one clip and one sentence per video, 25 fps local files.
    ms_dir = out / MSRVTT_CORPUS
    with atomic_write(ms_dir / "MSRVTT_JSFUSION_test.csv") as handle:
        handle.write("key;vid_key;video_id;sentence\n")
        for n, (vid, steps) in enumerate(plan[MSRVTT_CORPUS].items()):
            handle.write(f"ret{n};msr{vid[5:]};{vid};a person will {_sentence(steps[0])}\n")
            jobs.append((ms_dir / "videos" / f"{vid}.mp4", steps, "320x240", 25, True))

    # CrossTask-format set: videos.csv (task,video_id,url), tasks_primary.txt, annotations/<task>_<id>.csv.
    ct_dir = out / CROSSTASK_CORPUS
    tasks_used: dict[str, list[Step]] = {}
    with atomic_write(ct_dir / "videos.csv") as handle:
        for vid, (task, steps) in plan[CROSSTASK_CORPUS].items():
            handle.write(f"{task},{vid},https://www.youtube.com/watch?v={vid}\n")
            tasks_used[task] = steps
            with atomic_write(ct_dir / "annotations" / f"{task}_{vid}.csv") as annotation:
                for k in range(len(steps)):
                    annotation.write(f"{k + 1},{k * step_s:.2f},{(k + 1) * step_s:.2f}\n")
            jobs.append((ct_dir / "videos" / f"{vid}.mp4", steps, "640x360", 30, True))
    with atomic_write(ct_dir / "tasks_primary.txt") as handle:
        for task, steps in tasks_used.items():
            handle.write(f"{task}\n{CROSSTASK_TASKS[task]}\nhttps://www.wikihow.com/demo\n{len(steps)}\n"
                         + ",".join(_sentence(step) for step in steps) + "\n\n")

    for path, steps, size, fps, with_audio in tqdm(jobs, desc="demo videos", unit="video"):
        if not path.exists():
            render_video(path, steps, step_s, size, fps, with_audio)
    for name, corpus_dir in ((TRAIN_CORPUS, train_dir), (YOUCOOK_CORPUS, yc_dir), (MSRVTT_CORPUS, ms_dir),
                             (CROSSTASK_CORPUS, ct_dir)):
        counts[name] = len(list((corpus_dir / "videos").glob("*.mp4")))
    log.info("demo corpus in %s: %s video files; %d gone ids listed without a file", out, counts, len(gone))
    return counts


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser)
    parser.add_argument("--out-dir", required=True, help="where the corpus files go (the demo's corpus_dir)")


def main(args: argparse.Namespace) -> int:
    demo = settings_from_args(args, "demo")
    make_demo_corpus(demo, args.out_dir)
    return 0
