"""``mcnflow demo-corpus``: an offline, synthetic "HowTo100M" with known ground truth.

Every video is a sequence of steps, narrated as in HowTo100M. A step shows stripes in its
*ingredient*'s colour whose orientation and motion are its *action*'s; the audio plays the action as
a pure tone with the step's ASR-like caption ("now we chop the red tomato into cubes") spoken over it
by espeak-ng, under white noise at ``demo.noise_snr_db``. So a frame shows the step (colour: ingredient, stripes:
action), the tone tells the action, and the speech says both. The evaluation sets use every
(action, ingredient) combination at most once per set, so text -> video retrieval has exactly one
right answer per query and chance is 1 / n_queries.

Written in the real formats, read back by the real readers:
  howto100m/HowTo100M_v1.csv, howto100m/caption.json, howto100m/videos/<id>.mp4  (served over HTTP)
  youcook2/youcookii_annotations_trainval.json, youcook2/videos/<id>.mp4         (served over HTTP)
  msrvtt/MSRVTT_JSFUSION_test.csv, msrvtt/videos/<id>.mp4                         (a local folder)
  crosstask/videos.csv, tasks_primary.txt, annotations/<task>_<id>.csv, videos/    (served over HTTP)
  mining_youtube/videos_test.txt, annotations/<id>.srt, videos/<id>.mp4           (served over HTTP)
The ``gone`` ids are listed but have no file (the server answers 404); ``flaky`` ids fail once.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import random
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mcnflow.core.atomic import atomic_path, atomic_write
from mcnflow.core.config import ConfigError, add_settings_arguments, settings_from_args

log = logging.getLogger(__name__)

# ingredient -> colour of its texture (ffmpeg colour name); action -> tone (Hz). Octave-spaced tones
# land in clearly different mel bins.
INGREDIENTS = {"tomato": "red", "cucumber": "green", "blueberry": "blue", "lemon": "yellow",
               "eggplant": "purple", "carrot": "orange", "coconut": "white", "radish": "magenta"}
ACTIONS = {"chop": 220, "stir": 440, "peel": 880, "wash": 1760}
# What a caption says besides the action and the ingredient: the ingredient's colour before it and the
# action's manner after it ("now we chop the red tomato into cubes"). word2vec learns a word from the
# words around it; on the demo's 64 captions, words that only ever fill the same slot ("chop the X")
# come out near-identical (the 8 ingredients at mean cosine 0.97, the 4 actions at 0.97), so text could
# not tell steps apart. A word that goes only with its ingredient or only with its action gives each its
# own context, as real language does (then 0.20 and 0.14; benchmarks/demo_separability.py --text-only).
ACTION_MANNER = {"chop": "into cubes", "stir": "round slowly", "peel": "very thinly", "wash": "with water"}
FILLERS = ["now we", "okay so we", "next we", "then we", "and we", "so you"]

TRAIN_CORPUS, YOUCOOK_CORPUS, MSRVTT_CORPUS, CROSSTASK_CORPUS = "howto100m", "youcook2", "msrvtt", "crosstask"
CROSSTASK_TASKS = {"90001": "Make a fruit salad", "90002": "Prepare vegetables"}
MINING_CORPUS = "mining_youtube"


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
        CROSSTASK_CORPUS: [f"ctsk{i:07d}" for i in range(demo["crosstask_videos"])],
        MINING_CORPUS: [f"mytb{i:07d}" for i in range(demo["mining_youtube_videos"])],
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


# --- what a step looks like ---------------------------------------------------------------------------
# The demo's video features come from a randomly initialised ResNet152 (zero_init_residual: each residual
# block starts as the identity), i.e. about one random 7x7 convolution, ReLUs and four random 1x1
# projections, with no biases, averaged over the frame. That network keeps colours apart (it is positively
# homogeneous in the normalized pixel values, so a colour is a direction) and, within a colour, the
# orientation of fine stripes; shapes and coarse patterns it keeps far less apart. So a step shows stripes in
# its ingredient's colour, whose orientation and motion are its action's, on the grey that the input
# normalization maps to zero (the background adds nothing of its own). Flat colours, as the demo had
# before, showed only the ingredient: the four steps of one ingredient looked the same.
# benchmarks/demo_separability.py measures both through the real feature extractor.
COLOUR_RGB = {"red": (255, 0, 0), "green": (0, 128, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
              "purple": (128, 0, 128), "orange": (255, 165, 0), "white": (255, 255, 255), "magenta": (255, 0, 255)}
# action -> (direction the stripes vary along, degrees from the x axis; how they move)
ACTION_LOOKS = {"chop": (90, "bounce"), "stir": (135, "circle"), "peel": (0, "sweep"), "wash": (45, "shake")}
BACKGROUND_RGB = (124, 116, 104)   # the ImageNet mean (features.resnet.RECIPE_MEAN): normalized to ~0
STRIPE_PERIOD = 0.045              # fraction of the frame height (x0.85..1.15 per step): 5 px at short side 112
STRIPE_DUTY = 0.7                  # fraction of each period in the ingredient's colour
MOTION_AMPLITUDE = 0.15            # largest displacement, fraction of the frame height


def step_texture(step: Step, width: int, height: int, margin: int, rng: np.random.Generator) -> np.ndarray:
    """The step's stripes, ``margin`` pixels larger than the frame on every side: uint8 (H, W, 3).

    Drawn per step: the period (x0.85..1.15), the phase and the colour's brightness (x0.8..1).
    """
    angle = math.radians(ACTION_LOOKS[step.action][0])
    period = height * STRIPE_PERIOD * rng.uniform(0.85, 1.15)
    y, x = np.mgrid[0:height + 2 * margin, 0:width + 2 * margin].astype(np.float32)
    across = (x * math.cos(angle) + y * math.sin(angle)) / period + rng.uniform(0, 1)
    in_colour = across - np.floor(across) < STRIPE_DUTY
    colour = np.array(COLOUR_RGB[INGREDIENTS[step.ingredient]], dtype=np.float32) * rng.uniform(0.8, 1.0)
    return np.where(in_colour[..., None], colour, np.array(BACKGROUND_RGB, dtype=np.float32)).round().astype(np.uint8)


def motion_offset(action: str, seconds: float, step_seconds: float, amplitude: float,
                  phase: float) -> tuple[float, float]:
    """(dx, dy) in pixels of the stripes at ``seconds`` into the step; |dx|, |dy| <= ``amplitude``."""
    angle = math.radians(ACTION_LOOKS[action][0])
    motion = ACTION_LOOKS[action][1]
    if motion == "circle":    # stir: round a circle, once every two seconds
        turn = math.pi * seconds + phase
        return amplitude * math.cos(turn), amplitude * math.sin(turn)
    if motion == "bounce":    # chop: down and back up, twice a second
        along = amplitude * (1 - 2 * abs(math.sin(2 * math.pi * seconds + phase)))
    elif motion == "sweep":   # peel: one steady slide over the step
        along = amplitude * (2 * seconds / step_seconds - 1)
    elif motion == "shake":   # wash: a small fast shake, three times a second
        along = 0.5 * amplitude * math.sin(6 * math.pi * seconds + phase)
    else:
        raise ValueError(f"unknown motion {motion!r}")
    return along * math.cos(angle), along * math.sin(angle)   # across the stripes, so the motion shows


def step_frames(step: Step, width: int, height: int, fps: int, step_seconds: float, rng: np.random.Generator):
    """The frames of one step (uint8 (H, W, 3) views): its stripes, moved by its action."""
    amplitude = MOTION_AMPLITUDE * height
    margin = math.ceil(amplitude) + 1
    texture = step_texture(step, width, height, margin, rng)
    phase = rng.uniform(0, 2 * math.pi)
    for k in range(round(step_seconds * fps)):
        dx, dy = motion_offset(step.action, k / fps, step_seconds, amplitude, phase)
        x0, y0 = margin + round(dx), margin + round(dy)
        yield texture[y0:y0 + height, x0:x0 + width]


# --- what a step sounds like --------------------------------------------------------------------------
AUDIO_RATE = 16000        # Hz the track is made at: the pipeline's rate (normalize.audio_rate), so the
                          # noise's band and the stated SNR are the ones the audio features see
TONE_AMPLITUDE = 0.05     # the action tone's peak (RMS 0.035): the speech stays on top, as in HowTo100M
SPEECH_RMS = 0.1          # the spoken caption's RMS, ~9 dB above the tone
SPEECH_MARGIN = 0.1       # fraction of the step left without speech at its start and at its end
ESPEAK = "espeak-ng"
ESPEAK_VOICE = "en-us"
MAX_SPEECH_WPM = 450      # espeak-ng's fastest documented rate
DEFAULT_SPEECH_WPM = 175  # espeak-ng's own default (the schema's default for demo.speech_wpm)
DEFAULT_NOISE_SNR_DB = 15.0


class MissingTool(ConfigError):
    """A program the demo corpus needs is not installed; the message says how to install it."""


def require_espeak() -> str:
    """The espeak-ng executable, or a :class:`MissingTool` error that names it."""
    executable = shutil.which(ESPEAK)
    if executable is None:
        raise MissingTool("espeak-ng is not installed (not on PATH): the demo corpus speaks every caption "
                          "with it. Install it with `make system-deps` or `apt-get install -y espeak-ng`")
    return executable


# --- speech, tone and noise ---------------------------------------------------------------------------

def speech_span(step_seconds: float) -> tuple[float, float]:
    """(start, longest duration) of the spoken caption within its step, in seconds."""
    return SPEECH_MARGIN * step_seconds, (1 - 2 * SPEECH_MARGIN) * step_seconds


def _espeak_samples(text: str, wpm: int) -> np.ndarray:
    """espeak-ng's speech of ``text`` at ``wpm`` words per minute, float32 at AUDIO_RATE, silence trimmed."""
    from scipy.signal import resample_poly

    done = subprocess.run([require_espeak(), "-v", ESPEAK_VOICE, "-s", str(wpm), "--stdout", text],
                          capture_output=True, stdin=subprocess.DEVNULL)
    wav = done.stdout
    if done.returncode != 0 or wav[:4] != b"RIFF" or b"data" not in wav[:100]:
        raise RuntimeError(f"espeak-ng failed on {text!r}: "
                           f"{done.stderr.decode('utf-8', 'replace').strip() or 'no WAV on stdout'}")
    # espeak-ng streams a 16-bit mono WAV whose header cannot know its length: read the samples directly
    channels, rate, bits = (int.from_bytes(wav[22:24], "little"), int.from_bytes(wav[24:28], "little"),
                            int.from_bytes(wav[34:36], "little"))
    if (channels, bits) != (1, 16):
        raise RuntimeError(f"espeak-ng wrote {channels} channel(s) of {bits}-bit samples, expected 16-bit mono")
    start = wav.index(b"data") + 8
    samples = np.frombuffer(wav[start:start + (len(wav) - start) // 2 * 2], dtype="<i2").astype(np.float32) / 32768
    gcd = math.gcd(AUDIO_RATE, rate)
    samples = resample_poly(samples, AUDIO_RATE // gcd, rate // gcd).astype(np.float32)
    loud = np.flatnonzero(np.abs(samples) > 0.01 * np.abs(samples).max(initial=0.0))
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for {text!r}")
    return samples[loud[0]:loud[-1] + 1]


@functools.lru_cache(maxsize=1024)
def synthesize_speech(text: str, max_seconds: float, wpm: int = DEFAULT_SPEECH_WPM) -> np.ndarray:
    """``text`` spoken by espeak-ng, at most ``max_seconds`` long: float32 at AUDIO_RATE, RMS SPEECH_RMS.

    Spoken at ``wpm`` words per minute, faster when that would not fit (up to MAX_SPEECH_WPM).
    Deterministic; the result is cached and read-only.
    """
    rate = int(wpm)
    while True:
        samples = _espeak_samples(text, rate)
        seconds = samples.size / AUDIO_RATE
        if seconds <= max_seconds:
            break
        if rate >= MAX_SPEECH_WPM:
            raise ConfigError(f"the caption {text!r} takes {seconds:.2f} s even at {MAX_SPEECH_WPM} words per "
                              f"minute, more than the {max_seconds:.2f} s a step leaves for speech; raise "
                              "demo.step_seconds")
        rate = min(MAX_SPEECH_WPM, max(rate + 5, math.ceil(rate * seconds / max_seconds * 1.03)))
    samples = samples * (SPEECH_RMS / float(np.sqrt(np.mean(samples ** 2))))
    samples.setflags(write=False)
    return samples


def audio_track(steps: list[Step], step_seconds: float, speech: list[str] | None, speech_wpm: int,
                noise_snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    """The clip's sound, float32 mono at AUDIO_RATE: per step its action's tone with its caption spoken
    over it (``speech``: one text per step, None: tones only), then white noise at ``noise_snr_db`` dB
    below the whole clean track's power (None: no noise)."""
    if speech is not None and len(speech) != len(steps):
        raise ValueError(f"{len(speech)} spoken captions for {len(steps)} steps")
    per_step = round(step_seconds * AUDIO_RATE)
    start, longest = speech_span(step_seconds)
    t = np.arange(per_step, dtype=np.float64) / AUDIO_RATE
    track = np.zeros(per_step * len(steps), dtype=np.float64)
    for k, step in enumerate(steps):
        track[k * per_step:(k + 1) * per_step] = TONE_AMPLITUDE * np.sin(2 * np.pi * ACTIONS[step.action] * t)
        if speech is not None:
            spoken = synthesize_speech(speech[k], longest, speech_wpm)
            offset = k * per_step + round(start * AUDIO_RATE)
            track[offset:offset + spoken.size] += spoken
    if noise_snr_db is not None:
        noise_power = np.mean(track ** 2) / 10 ** (noise_snr_db / 10)
        track += rng.standard_normal(track.size) * math.sqrt(noise_power)
    peak = np.abs(track).max(initial=0.0)
    if peak > 0.99:   # scale the whole track (the SNR stays): AAC must not clip
        track *= 0.99 / peak
    return track.astype(np.float32)


def _video_seed(seed: int, video_id: str) -> int:
    """Each video's own random stream (textures, motion phases, noise), stable across runs and machines."""
    return zlib.crc32(f"{seed}:{video_id}".encode())


def render_video(path: Path, steps: list[Step], step_seconds: float, size: str, fps: int,
                 with_audio: bool = True, speech: list[str] | None = None,
                 speech_wpm: int = DEFAULT_SPEECH_WPM, noise_snr_db: float | None = DEFAULT_NOISE_SNR_DB,
                 seed: int = 0) -> None:
    """Encode the steps into a small h264/aac mp4 (atomically).

    Frames are made with numpy and piped to ffmpeg; the audio (:func:`audio_track`, made at 16 kHz) is
    encoded at 44.1 kHz like a web video's. ``speech``: the text spoken in each step (None: no speech).
    ``seed`` draws the textures, motion phases and noise, so a video is the same on every run.
    """
    width, height = (int(n) for n in size.split("x"))
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="mcnflow-demo-") as scratch, atomic_path(path) as tmp:
        inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(fps),
                  "-i", "pipe:"]
        maps = ["-map", "0:v"]
        if with_audio:
            from scipy.io import wavfile

            wav = Path(scratch) / "audio.wav"
            wavfile.write(wav, AUDIO_RATE, audio_track(steps, step_seconds, speech, speech_wpm, noise_snr_db,
                                                       np.random.default_rng([seed, 1])))
            inputs += ["-i", str(wav)]
            # 96 kb/s: at 64 kb/s AAC drops enough of the white noise to raise the SNR by ~1.5 dB
            maps += ["-map", "1:a", "-c:a", "aac", "-b:a", "96k", "-ar", "44100"]
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs, *maps,
               # crf 28: ~3 MB per 8 s 640x360 video of moving stripes (the default 23: ~4.4 MB); slower
               # presets make far smaller files (veryfast: 0.2 MB) but double the corpus's generation time
               "-c:v", "libx264", "-preset", "ultrafast", "-crf", "28", "-pix_fmt", "yuv420p", "-f", "mp4", str(tmp)]
        encoder = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        try:
            for step in steps:
                for frame in step_frames(step, width, height, fps, step_seconds, rng):
                    encoder.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped early: its exit status below says why
        finally:
            encoder.stdin.close()
            returncode = encoder.wait()
        if returncode != 0:
            raise subprocess.CalledProcessError(returncode, cmd)


def _sentence(step: Step) -> str:
    return f"{step.action} the {INGREDIENTS[step.ingredient]} {step.ingredient} {ACTION_MANNER[step.action]}"


def _caption(step: Step, rng: random.Random) -> str:
    return f"{rng.choice(FILLERS)} {_sentence(step)}"


def _srt_time(seconds: float) -> str:
    millis = int(round(seconds * 1000))
    return f"{millis // 3600000:02d}:{millis // 60000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"


def write_mining_youtube(demo: dict, out: Path) -> list[tuple[Path, list[Step], str, int, bool]]:
    """The Mining-YouTube-format set (the release's ``test/``): ``videos_test.txt`` and one SubRip
    ``annotations/<id>.srt`` per video labelling its steps ``<action>_<ingredient>``; returns the
    videos to render. Each video shows distinct combinations, drawn from their own random stream
    (so the other demo sets never change with this one)."""
    rng = random.Random(demo["seed"] + 7)
    step_s = demo["step_seconds"]
    mining_dir = out / MINING_CORPUS
    jobs = []
    ids = planned_video_ids(demo)[MINING_CORPUS]
    with atomic_write(mining_dir / "videos_test.txt") as handle:
        handle.write("".join(f"{vid}\n" for vid in ids))
    for vid in ids:
        steps = rng.sample(_all_steps(), demo["steps_per_video"])
        with atomic_write(mining_dir / "annotations" / f"{vid}.srt") as handle:
            handle.write("\n".join(f"{k + 1}\n{_srt_time(k * step_s)} --> {_srt_time((k + 1) * step_s)}\n"
                                   f"{step.action}_{step.ingredient}\n" for k, step in enumerate(steps)))
        jobs.append((mining_dir / "videos" / f"{vid}.mp4", steps, "640x360", 30, True))
    return jobs


def make_demo_corpus(demo: dict, out_dir: str | Path) -> dict[str, int]:
    """Write the three demo corpora under ``out_dir``; return the number of video files per corpus."""
    out = Path(out_dir)
    require_espeak()  # before any file is written: every caption is spoken
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

    jobs += write_mining_youtube(demo, out)  # last: the other videos' narration draws come first

    # Narration: a training video speaks its caption.json texts; the others get ASR-like captions of their
    # own (drawn for every job, rendered or not, so each video's narration never depends on what exists).
    speech_rng = random.Random(demo["seed"] + 2)
    speech_wpm = demo.get("speech_wpm", DEFAULT_SPEECH_WPM)
    noise_snr_db = demo.get("noise_snr_db", DEFAULT_NOISE_SNR_DB)
    for path, steps, size, fps, with_audio in tqdm(jobs, desc="demo videos", unit="video"):
        spoken = captions[path.stem]["text"] if path.stem in captions else [_caption(s, speech_rng) for s in steps]
        if not path.exists():
            render_video(path, steps, step_s, size, fps, with_audio, speech=spoken, speech_wpm=speech_wpm,
                         noise_snr_db=noise_snr_db, seed=_video_seed(demo["seed"], path.stem))
    for name, corpus_dir in ((TRAIN_CORPUS, train_dir), (YOUCOOK_CORPUS, yc_dir), (MSRVTT_CORPUS, ms_dir),
                             (CROSSTASK_CORPUS, ct_dir), (MINING_CORPUS, out / MINING_CORPUS)):
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
