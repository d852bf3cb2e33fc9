"""The narrated demo corpus: each caption spoken inside its step, noise at the stated SNR, and visuals whose
step classes differ the way the generator draws them (colour = ingredient, stripe orientation = action).

Audio is decoded as the pipeline decodes it (:func:`mcnflow.features.audio.decode_audio`, 16 kHz mono).
"""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mcnflow.core.config import ConfigError, load_config
from mcnflow.demo.corpus import (ACTION_LOOKS, BACKGROUND_RGB, COLOUR_RGB, INGREDIENTS, Step, audio_track,
                                 make_demo_corpus, render_video, speech_span, synthesize_speech)
from mcnflow.features.audio import decode_audio
from mcnflow.features.frames import decode_frames

from conftest import require_ffmpeg

RATE = 16000          # features.audio.sample_rate
STEP_S = 2.0
WPM = 200
# wash: its 1760 Hz tone lies inside the speech band; chop: its 220 Hz tone lies below it
STEPS = [Step("wash", "tomato"), Step("chop", "lemon")]
TEXTS = ["okay so we wash the tomato", "now we chop the lemon"]


def require_espeak():
    if not shutil.which("espeak-ng"):
        pytest.fail("espeak-ng is not installed (make system-deps installs it)")


def band_power(samples: np.ndarray, low: float, high: float) -> float:
    """Mean power of ``samples`` between ``low`` and ``high`` Hz (Parseval over the rfft bins)."""
    spectrum = np.fft.rfft(samples * np.hanning(len(samples)))
    freqs = np.fft.rfftfreq(len(samples), 1 / RATE)
    keep = (freqs >= low) & (freqs <= high)
    return float(np.sum(np.abs(spectrum[keep]) ** 2) / len(samples) ** 2)


def window(samples: np.ndarray, start: float, end: float) -> np.ndarray:
    return samples[round(start * RATE):round(end * RATE)]


def spoken_seconds(text: str) -> float:
    return synthesize_speech(text, speech_span(STEP_S)[1], WPM).size / RATE


def correlation_at(samples: np.ndarray, reference: np.ndarray, start: float) -> float:
    """Normalized correlation of ``reference`` with ``samples`` from ``start`` s, best lag within 20 ms."""
    offset, slack = round(start * RATE), round(0.02 * RATE)
    segment = samples[offset - slack:offset + reference.size + slack]
    scores = np.correlate(segment, reference, "valid")
    lag = int(np.argmax(scores))
    return float(scores[lag] / np.linalg.norm(reference) / np.linalg.norm(segment[lag:lag + reference.size]))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """One two-step clip rendered three ways with the same seed, decoded to 16 kHz mono."""
    require_ffmpeg()
    require_espeak()
    out = tmp_path_factory.mktemp("narration")
    variants = {"narrated": (TEXTS, None), "tone_only": (None, None), "noisy": (TEXTS, 10.0)}
    audio = {}
    for name, (speech, snr) in variants.items():
        path = out / f"{name}.mp4"
        render_video(path, STEPS, STEP_S, "160x90", 30, True, speech=speech, speech_wpm=WPM, noise_snr_db=snr,
                     seed=5)
        audio[name] = decode_audio(path, RATE)
    return audio


def test_speech_fills_the_speech_band_only_where_the_caption_is_spoken(clips):
    narrated, tone_only = clips["narrated"], clips["tone_only"]
    start, longest = speech_span(STEP_S)
    for k, text in enumerate(TEXTS):
        step_start, seconds = k * STEP_S, spoken_seconds(text)
        assert 0.5 < seconds <= longest
        spoken = (step_start + start, step_start + start + seconds)
        lead = (step_start + 0.03, step_start + start - 0.03)         # the step's tone before the speech
        tail = (spoken[1] + 0.03, step_start + STEP_S - 0.03)         # ... and after it, inside the step
        speech_band = band_power(window(narrated, *spoken), 300, 3400)
        assert speech_band > 4 * band_power(window(tone_only, *spoken), 300, 3400), text
        assert speech_band > 4 * band_power(window(narrated, *lead), 300, 3400), text
        for quiet in (lead, tail):   # no speech there: at most 2% of the spoken part's band power more
            extra = band_power(window(narrated, *quiet), 300, 3400) - band_power(window(tone_only, *quiet), 300, 3400)
            assert extra < 0.02 * speech_band, (text, quiet)


def test_each_step_speaks_its_own_caption_at_its_place(clips):
    speech_only = clips["narrated"] - clips["tone_only"]
    start, longest = speech_span(STEP_S)
    for k, text in enumerate(TEXTS):
        expected = synthesize_speech(text, longest, WPM)
        other = synthesize_speech(TEXTS[1 - k], longest, WPM)
        assert correlation_at(speech_only, expected, k * STEP_S + start) > 0.9, text
        assert correlation_at(speech_only, other, k * STEP_S + start) < 0.5, text


def test_noise_is_at_the_stated_snr(clips):
    clean, noisy = clips["narrated"], clips["noisy"]
    n = min(len(clean), len(noisy))
    clean_power, noisy_power = np.mean(clean[:n] ** 2), np.mean(noisy[:n] ** 2)
    assert 10 * math.log10(clean_power / (noisy_power - clean_power)) == pytest.approx(10.0, abs=1.0)
    # white: the noise also fills the band where neither the tones nor the voice have much energy
    assert band_power(noisy[:n], 5000, 7500) > 5 * band_power(clean[:n], 5000, 7500)


@pytest.mark.parametrize("snr_db", [0.0, 15.0, 30.0])
def test_generated_track_has_the_stated_snr_exactly(snr_db):
    require_espeak()
    clean = audio_track(STEPS, STEP_S, TEXTS, WPM, None, np.random.default_rng(0)).astype(np.float64)
    noisy = audio_track(STEPS, STEP_S, TEXTS, WPM, snr_db, np.random.default_rng(0)).astype(np.float64)
    snr = 10 * math.log10(np.mean(clean ** 2) / np.mean((noisy - clean) ** 2))
    assert snr == pytest.approx(snr_db, abs=0.1)


def test_a_caption_too_long_for_its_step_is_a_clear_error():
    require_espeak()
    with pytest.raises(ConfigError, match="demo.step_seconds"):
        synthesize_speech("okay so we chop the blueberry and then we peel the cucumber", 0.3, WPM)


def test_training_videos_speak_their_caption_json_texts(tmp_path, repo_root):
    require_ffmpeg()
    require_espeak()
    config = load_config([repo_root / "config.yaml", repo_root / "demo/config.yaml"])
    demo = dict(config["demo"], train_videos=1, eval_videos=1, msrvtt_videos=1, crosstask_videos=0,
                steps_per_video=2, step_seconds=STEP_S, speech_wpm=WPM, gone=[], flaky=[], no_audio=[])
    if "mining_youtube_videos" in demo:
        demo["mining_youtube_videos"] = 0
    make_demo_corpus(demo, tmp_path)
    captions = json.loads((tmp_path / "howto100m/caption.json").read_text())["demo0000000"]
    audio = decode_audio(tmp_path / "howto100m/videos/demo0000000.mp4", RATE)
    start, longest = speech_span(STEP_S)
    for k, text in enumerate(captions["text"]):
        assert captions["start"][k] == k * STEP_S
        score = correlation_at(audio, synthesize_speech(text, longest, WPM), k * STEP_S + start)
        assert score > 0.8, (text, score)   # under the tone and the 15 dB noise
        wrong = synthesize_speech("so you stir the coconut" if "coconut" not in text else "so you wash the lemon",
                                  longest, WPM)
        assert correlation_at(audio, wrong, k * STEP_S + start) < 0.5


def test_rendering_is_deterministic(tmp_path):
    require_ffmpeg()
    require_espeak()
    paths = [tmp_path / f"{name}.mp4" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (3, 3, 4)):
        render_video(path, STEPS, 1.0, "160x90", 30, True, speech=TEXTS, speech_wpm=WPM, noise_snr_db=15.0, seed=seed)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()


def test_missing_espeak_is_a_clear_error_before_any_file(tmp_path, repo_root):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    out = tmp_path / "corpus"
    done = subprocess.run([sys.executable, "-m", "mcnflow", "demo-corpus", "--config", str(repo_root / "config.yaml"),
                           str(repo_root / "demo/config.yaml"), "--out-dir", str(out)],
                          capture_output=True, text=True, env={**os.environ, "PATH": str(empty_bin)}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "espeak-ng is not installed" in done.stderr and "apt-get install -y espeak-ng" in done.stderr
    assert not out.exists() or not any(out.rglob("*"))


# --- visuals --------------------------------------------------------------------------------------------

def _luma(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _change_along(frame: np.ndarray, dx: int, dy: int) -> float:
    """Mean |luma difference| between pixels one step (dx, dy) apart, away from the borders."""
    luma = _luma(frame)
    shifted = np.roll(luma, (-dy, -dx), axis=(0, 1))   # shifted[y, x] = luma[y + dy, x + dx]
    return float(np.mean(np.abs(shifted - luma)[4:-4, 4:-4]))


@pytest.fixture(scope="module")
def step_videos(tmp_path_factory):
    """One 1-step video per action (all tomato) and one blueberry, decoded at 5 fps at their own size."""
    require_ffmpeg()
    out = tmp_path_factory.mktemp("looks")
    frames = {}
    for step in [Step(action, "tomato") for action in ACTION_LOOKS] + [Step("chop", "blueberry")]:
        path = out / f"{step.action}-{step.ingredient}.mp4"
        render_video(path, [step], STEP_S, "320x180", 30, with_audio=False, seed=11)
        frames[step] = decode_frames(path, 5, 180).frames
    return frames


@pytest.mark.parametrize("action", list(ACTION_LOOKS))
def test_the_action_sets_the_stripes_orientation(step_videos, action):
    angle = ACTION_LOOKS[action][0]
    # one pixel along the stripes and one across them, for the direction they vary along
    along, across = {0: ((0, 1), (1, 0)), 90: ((1, 0), (0, 1)), 45: ((1, -1), (1, 1)), 135: ((1, 1), (1, -1))}[angle]
    for frame in step_videos[Step(action, "tomato")]:
        assert _change_along(frame, *along) < 0.3 * _change_along(frame, *across)


def test_steps_of_different_actions_look_different(step_videos):
    # the same ingredient, so the same colours: only the orientation tells the actions apart
    chop, peel = step_videos[Step("chop", "tomato")][0], step_videos[Step("peel", "tomato")][0]
    assert _change_along(chop, 1, 0) < 0.3 * _change_along(peel, 1, 0)
    assert _change_along(peel, 0, 1) < 0.3 * _change_along(chop, 0, 1)


def test_the_ingredient_sets_the_colour(step_videos):
    background = np.array(BACKGROUND_RGB, dtype=np.float32)
    for ingredient in ("tomato", "blueberry"):
        pixels = step_videos[Step("chop", ingredient)].reshape(-1, 3).astype(np.float32)
        coloured = pixels[np.linalg.norm(pixels - background, axis=1) > 80]
        assert len(coloured) > 0.4 * len(pixels)      # stripes in colour on about 70% of the frame
        mean = coloured.mean(axis=0)
        target = np.array(COLOUR_RGB[INGREDIENTS[ingredient]], dtype=np.float32)
        cosine = mean @ target / np.linalg.norm(mean) / np.linalg.norm(target)
        assert cosine > 0.95, (ingredient, mean)
    tomato = step_videos[Step("chop", "tomato")].reshape(-1, 3).mean(axis=0)
    blueberry = step_videos[Step("chop", "blueberry")].reshape(-1, 3).mean(axis=0)
    assert tomato[0] > tomato[2] + 60 and blueberry[2] > blueberry[0] + 60


@pytest.mark.parametrize("action", list(ACTION_LOOKS))
def test_the_stripes_move(step_videos, action):
    frames = step_videos[Step(action, "tomato")].astype(np.float32)
    changes = [float(np.mean(np.abs(b - a))) for a, b in zip(frames, frames[1:])]
    assert np.mean(changes) > 5, changes
