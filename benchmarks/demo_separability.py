"""Can the demo's video and text branches learn anything? How far apart the demo's step classes are in
its video features and in its word vectors.

The demo extracts video features with a randomly initialised ResNet152 (``features.video.weights: none``),
so what the demo draws decides whether text-video can learn. For every (action, ingredient) step class
this renders ``--repeats`` steps (each with its own seed) twice:

  old   the previous demo's visuals: the ingredient as a flat full-frame colour (ffmpeg lavfi ``color``,
        exactly as the demo rendered it before);
  new   the demo generator's visuals (:func:`mcnflow.demo.corpus.render_video`): stripes in the
        ingredient's colour whose orientation and motion are the action's.

Each step is a 640x360 30 fps video (the HowTo100M-format size; normalization to 454x256 only rescales it
by 0.7%), decoded as the pipeline does (:func:`mcnflow.features.frames.decode_frames`, 1 fps, the demo's
``features.video.short_side``) and encoded by :class:`mcnflow.features.resnet.FrameEncoder` with the
demo's weights setting and seed (L2-normalised, as configured). A step's clip feature is pooled as
training pools it (:func:`mcnflow.model.inputs.video_item`: max over its seconds, L2-normalised), over the
first ``--frames-per-step`` frames (the frame at 1 s by default: mid-motion).

Printed for the ingredient classes, the action classes and, with ``--repeats`` >= 2, the demo's step
classes, (action, ingredient), which is what a caption names and text-video retrieval must tell apart:
  loo_nc   leave-one-out nearest-centroid accuracy (cosine to the other samples' class means), with chance;
  within   mean cosine between two different samples of one class;
  between  mean cosine between samples of different classes;
  gap      within - between: how much closer a class is to itself than to the rest on average, in the
           cosine the model's input has;
  margin   mean over samples of (cosine to its own class's centroid, itself left out) - (cosine to the
           nearest other class's centroid): < 0 where some other class looks the same.

The text part (seconds) does the same for the captions. The demo trains word2vec on its own captions
(``features.text.word2vec.source: train``), so what a caption says decides whether words are told apart:
  old   the previous demo's captions, "<filler> <action> the <ingredient>";
  new   the demo generator's captions (:func:`mcnflow.demo.corpus._caption`), which add the ingredient's
        colour and the action's manner ("now we chop the red tomato into cubes").
For each, ``--captions`` captions (the demo's 16 training videos x 4 steps by default) are drawn as the
generator draws them, word2vec is trained on them with the demo's settings
(:func:`mcnflow.features.word2vec.trained_vectors`), and printed are the mean cosine between the word
vectors of the 8 ingredients and of the 4 actions (the words that tell steps apart), and the separability
of the step classes in the mean word vector of one caption per (class, filler).

    .venv/bin/python benchmarks/demo_separability.py              # 2 steps per class: 2 x 64 frames, ~2 min on 2 cores
    .venv/bin/python benchmarks/demo_separability.py --repeats 1  # no step classes: 2 x 32 frames
    .venv/bin/python benchmarks/demo_separability.py --text-only  # word vectors only, seconds
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mcnflow.core.config import load_config
from mcnflow.demo.corpus import ACTIONS, FILLERS, INGREDIENTS, Step, _caption, _video_seed, render_video
from mcnflow.features.captions import words_of
from mcnflow.features.frames import decode_frames
from mcnflow.features.resnet import FrameEncoder, ResNet152Weights
from mcnflow.features.word2vec import trained_vectors
from mcnflow.model.inputs import video_item

REPO = Path(__file__).resolve().parents[1]
SIZE, FPS = "640x360", 30


def render_flat_colour(path: Path, step: Step, step_seconds: float) -> None:
    """One step with the previous demo's visuals: a flat full-frame colour (its lavfi source, unchanged)."""
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c={INGREDIENTS[step.ingredient]}:s={SIZE}:d={step_seconds}:r={FPS}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mp4", str(path)],
                   check=True)


def render_new(path: Path, step: Step, step_seconds: float, seed: int) -> None:
    render_video(path, [step], step_seconds, SIZE, FPS, with_audio=False, seed=seed)


def clip_features(paths: list[Path], encoder: FrameEncoder, short_side: int, frames_per_step: int,
                  batch_size: int) -> tuple[np.ndarray, int]:
    """One pooled, L2-normalised feature per step video; and how many frames went through the model."""
    frames = []
    for path in paths:
        decoded = decode_frames(path, 1, short_side)
        if decoded.n_frames < frames_per_step:
            raise SystemExit(f"{path}: {decoded.n_frames} frames decoded, --frames-per-step is {frames_per_step}")
        # one frame: the one at 1 s (mid-motion) when the step lasts that long; two: seconds 0 and 1
        first = 1 if frames_per_step == 1 and decoded.n_frames > 1 else 0
        frames.append(decoded.frames[first:first + frames_per_step])
    stacked = torch.from_numpy(np.concatenate(frames))
    rows = torch.cat([encoder(stacked[i:i + batch_size]) for i in range(0, len(stacked), batch_size)]).numpy()
    per_step = rows.reshape(len(paths), frames_per_step, -1)
    return np.stack([video_item(f, 0, frames_per_step - 1)["video"] for f in per_step]), len(stacked)


def separability(features: np.ndarray, labels: list) -> dict[str, float]:
    """Leave-one-out nearest-centroid accuracy and mean within/between-class cosine of L2-normalised rows."""
    labels_arr = np.array([str(label) for label in labels])
    classes = sorted(set(labels_arr))
    cos = features @ features.T
    same = labels_arr[:, None] == labels_arr[None, :]
    off_diagonal = ~np.eye(len(labels_arr), dtype=bool)
    sums = {c: features[labels_arr == c].sum(axis=0) for c in classes}
    counts = {c: int((labels_arr == c).sum()) for c in classes}
    correct, margins = 0, []
    for x, label in zip(features, labels_arr):
        scores = {}
        for c in classes:
            n = counts[c] - (c == label)
            if n == 0:
                continue
            centroid = (sums[c] - (x if c == label else 0)) / n
            scores[c] = float(x @ centroid / (np.linalg.norm(centroid) + 1e-12))
        correct += max(scores, key=scores.get) == label
        if label in scores:
            margins.append(scores[label] - max(v for c, v in scores.items() if c != label))
    within, between = float(cos[same & off_diagonal].mean()), float(cos[~same].mean())
    return {"loo_nc": correct / len(labels_arr), "chance": 1 / len(classes), "within": within,
            "between": between, "gap": within - between, "margin": float(np.mean(margins))}


def old_caption(step: Step, rng: random.Random) -> str:
    """The previous demo's caption of a step (its generator, unchanged)."""
    return f"{rng.choice(FILLERS)} {step.action} the {step.ingredient}"


def mean_slot_cosine(vectors: dict[str, np.ndarray], words: list[str]) -> float:
    rows = np.stack([vectors[w] / np.linalg.norm(vectors[w]) for w in words])
    cos = rows @ rows.T
    return float(cos[~np.eye(len(words), dtype=bool)].mean())


def text_separability(w2v: dict, n_captions: int, seed: int) -> dict[str, dict]:
    """Per caption style: word2vec trained on ``n_captions`` random steps' captions, then slot cosines and
    step-class separability of caption vectors (mean of the caption's word vectors, L2-normalised)."""
    steps = [Step(a, i) for a in ACTIONS for i in INGREDIENTS]
    out = {}
    for style, make in (("old", old_caption), ("new", _caption)):
        rng = random.Random(seed)
        sentences = [words_of(make(rng.choice(steps), rng)) for _ in range(n_captions)]
        words = trained_vectors(w2v, sentences, "demo")
        vectors = dict(zip(words.words, words.vectors))
        # one caption per (step class, filler): the step is what retrieval must tell; the filler is noise
        probe_rng = random.Random(seed + 1)
        probe = [(step, make(step, probe_rng)) for step in steps for _ in FILLERS]
        rows = np.stack([np.mean([vectors[w] for w in words_of(text) if w in vectors], axis=0) for _, text in probe])
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[style] = {"ingredient_cos": mean_slot_cosine(vectors, list(INGREDIENTS)),
                      "action_cos": mean_slot_cosine(vectors, list(ACTIONS)),
                      "step": separability(rows, [(s.action, s.ingredient) for s, _ in probe])}
    return out


def print_text(results: dict[str, dict], w2v: dict, n_captions: int) -> None:
    print(f"word2vec trained on {n_captions} captions (vector_size {w2v['vector_size']}, window {w2v['window']}, "
          f"epochs {w2v['epochs']}); step classes: mean word vector of one caption per (class, filler)")
    print(f"{'captions':<9} {'ingredient cos':>15} {'action cos':>11} {'step loo_nc':>12} {'chance':>7} {'gap':>9}")
    for style, r in results.items():
        print(f"{style:<9} {r['ingredient_cos']:>15.3f} {r['action_cos']:>11.3f} {r['step']['loo_nc']:>12.3f} "
              f"{r['step']['chance']:>7.3f} {r['step']['gap']:>9.5f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="steps rendered per (action, ingredient) class")
    parser.add_argument("--frames-per-step", type=int, default=1, choices=(1, 2),
                        help="1: the step's frame at 1 s; 2: both of its seconds, max-pooled")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--captions", type=int, default=None,
                        help="captions word2vec is trained on (default: the demo's training videos x steps)")
    parser.add_argument("--text-only", action="store_true", help="only the word-vector part")
    args = parser.parse_args(argv)

    config = load_config([REPO / "config.yaml", REPO / "demo/config.yaml"])
    video, demo = config["features"]["video"], config["demo"]
    w2v = config["features"]["text"]["word2vec"]
    n_captions = args.captions or demo["train_videos"] * demo["steps_per_video"]
    print_text(text_separability(w2v, n_captions, demo["seed"]), w2v, n_captions)
    if args.text_only:
        return 0
    print()
    step_seconds = demo["step_seconds"]
    torch.set_num_threads(args.threads)
    weights = ResNet152Weights.resolve(video["weights"], video["seed"])
    encoder = FrameEncoder(weights, torch.device("cpu"), video["l2_normalize"])
    steps = [Step(a, i) for a in ACTIONS for i in INGREDIENTS for _ in range(args.repeats)]
    print(f"features: {weights.description}, short side {video['short_side']}, l2_normalize "
          f"{video['l2_normalize']}; {len(steps)} steps per look ({args.repeats} per class), "
          f"{args.frames_per_step} frame(s) per step, {step_seconds:g} s steps")

    results = {}
    with tempfile.TemporaryDirectory(prefix="demo-separability-") as scratch:
        for look in ("old", "new"):
            started = time.perf_counter()
            paths = []
            for n, step in enumerate(steps):
                path = Path(scratch) / f"{look}-{n:03d}.mp4"
                if look == "old":
                    render_flat_colour(path, step, step_seconds)
                else:
                    render_new(path, step, step_seconds, _video_seed(demo["seed"], f"separability{n}"))
                paths.append(path)
            rendered = time.perf_counter()
            features, n_frames = clip_features(paths, encoder, video["short_side"], args.frames_per_step,
                                               video["batch_size"])
            done = time.perf_counter()
            print(f"{look}: rendered {len(paths)} steps in {rendered - started:.1f} s, "
                  f"{n_frames} frames through the model in {done - rendered:.1f} s")
            groupings = {"ingredient": [s.ingredient for s in steps], "action": [s.action for s in steps]}
            if args.repeats >= 2:
                groupings["step"] = [(s.action, s.ingredient) for s in steps]
            results[look] = {name: separability(features, labels) for name, labels in groupings.items()}

    print()
    print(f"{'classes':<11} {'look':<4} {'loo_nc':>7} {'chance':>7} {'within':>9} {'between':>9} {'gap':>9} "
          f"{'margin':>9}")
    for name in results["new"]:
        for look in ("old", "new"):
            r = results[look][name]
            print(f"{name:<11} {look:<4} {r['loo_nc']:>7.3f} {r['chance']:>7.3f} {r['within']:>9.5f} "
                  f"{r['between']:>9.5f} {r['gap']:>9.5f} {r['margin']:>9.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
