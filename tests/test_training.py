"""Clip sampling, the HDF5 dataset and the training loop (resume, logs, learning) on tiny shards."""

from __future__ import annotations

import copy
import csv
import json
import math

import numpy as np
import pytest
import torch

from mcnflow.cli import main as mcnflow_main
from mcnflow.features.store import ShardWriter
from mcnflow.features.word2vec import fingerprint as word2vec_fingerprint
from mcnflow.model import load_model
from mcnflow.model.losses import NonFiniteLossError
from mcnflow.model import inputs as clips
from mcnflow.training.dataset import ClipDataset
from mcnflow.training.trainer import Trainer, lr_factor, train

VIDEO_DIM, WORD_DIM, N_MELS, TOPICS, WORDS_PER_TOPIC = 16, 8, 8, 4, 5


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see conftest.one_torch_thread)."""


# --- tiny corpus --------------------------------------------------------------------------------

def write_corpus(root, n_videos=6, seconds=12, caption_seconds=2.0, seed=0, missing_audio=(), shards=2,
                 topics=TOPICS):
    """Synthetic but learnable shards: each caption has a topic that shapes its seconds of video,
    its audio frames and its words. Returns {modality: [paths]} plus the word2vec source's fingerprint."""
    rng = np.random.default_rng(seed)
    video_protos = rng.normal(size=(topics, VIDEO_DIM))
    audio_protos = rng.normal(size=(topics, N_MELS))
    words = [f"w{t}_{i}" for t in range(topics) for i in range(WORDS_PER_TOPIC)]
    vectors = rng.normal(size=(len(words), WORD_DIM)).astype(np.float32)
    source = word2vec_fingerprint(words, vectors)
    ids = [f"vid{i:03d}" for i in range(n_videos)]
    per_shard = math.ceil(n_videos / shards)
    paths = {m: [] for m in ("video", "audio", "text")}
    for shard in range(shards):
        members = ids[shard * per_shard:(shard + 1) * per_shard]
        contents = {}
        for video_id in members:
            n_captions = int(seconds / caption_seconds)
            caption_topics = rng.integers(0, topics, size=n_captions)
            starts = np.arange(n_captions, dtype=np.float32) * caption_seconds
            ends = starts + caption_seconds
            video = np.zeros((seconds, VIDEO_DIM), dtype=np.float32)
            audio = np.zeros((N_MELS, seconds * 100), dtype=np.float32)
            tokens, offsets = [], [0]
            for topic, start, end in zip(caption_topics, starts, ends):
                s, e = int(start), int(end)
                video[s:e] = np.abs(video_protos[topic] + 0.3 * rng.normal(size=(e - s, VIDEO_DIM)))
                audio[:, s * 100:e * 100] = audio_protos[topic][:, None] + 0.3 * rng.normal(size=(N_MELS, (e - s) * 100))
                chosen = rng.choice(WORDS_PER_TOPIC, size=3, replace=False) + topic * WORDS_PER_TOPIC
                tokens.extend(chosen.tolist())
                offsets.append(len(tokens))
            text = {"token_ids": np.array(tokens, dtype=np.int32), "offsets": np.array(offsets, dtype=np.int64),
                    "start": starts, "end": ends}
            contents[video_id] = {"video": video.astype(np.float16), "audio": audio.astype(np.float16), "text": text}
        for modality in ("video", "audio", "text"):
            path = root / modality / f"shard-{shard:05d}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            attrs = {"video": {"fps": 1}, "audio": {"hop_ms": 10},
                     "text": {"word2vec_fingerprint": source}}[modality]
            with ShardWriter(path, modality, "tiny", shard, attrs=attrs) as writer:
                if modality == "text":  # every word in the table; token ids index it
                    writer.add_word_table(words, vectors)
                for video_id, data in contents.items():
                    if modality == "audio" and video_id in missing_audio:
                        writer.mark(video_id, "no_audio")
                    else:
                        writer.add(video_id, data[modality])
            paths[modality].append(path)
    return paths, source


def tiny_settings(pairs=("tv", "ta", "va"), space="shared", **training_overrides):
    training = {
        "embd_dim": 32, "video_dim": VIDEO_DIM, "word_dim": WORD_DIM, "n_pair": 4, "min_time": 3.0,
        "max_words": 6, "audio_frames": 64, "batch_size": 3, "epochs": 2, "lr": 1e-3, "optimizer": "adam",
        "warmup_steps": 2, "schedule": "warmup_cosine", "margin": 0.001, "clusters": 4, "queue_batches": 2,
        "kmeans_iters": 10, "recon_size": 16, "num_workers": 0, "device": "cpu", "amp": False, "seed": 3,
        "tensorboard": False, "audio_widths": [8, 8, 8, 16, 16], "video_features": ["2d"],
    }
    training.update(training_overrides)
    losses = {"mms": {"enabled": True, "weight": 1.0}, "clustering": {"enabled": True, "weight": 1.0},
              "reconstruction": {"enabled": True, "weight": 50.0}}
    return {"pairs": list(pairs), "space": space, "losses": losses, "training": training}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return write_corpus(root, missing_audio=("vid005",))


def make_dataset(corpus, settings):
    paths, _ = corpus
    from mcnflow.model import modalities_of
    t = settings["training"]
    modalities = modalities_of(settings["pairs"])
    return ClipDataset(shards=paths, modalities=modalities,
                       n_pair=t["n_pair"], min_time=t["min_time"], max_words=t["max_words"],
                       audio_frames=t["audio_frames"], seed=t["seed"])


def read_log(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


# --- clips --------------------------------------------------------------------------------------

def test_grow_clip_merges_the_nearer_neighbour_until_min_time():
    starts, ends = [0.0, 3.0, 5.0, 12.0], [2.0, 5.0, 9.0, 14.0]
    # Caption 1 spans 2 s. Taking caption 0 gives 0..5 (5 s), caption 2 gives 3..9 (6 s): take 0.
    # Now 5 s < 6 s and nothing is before: take caption 2 -> 0..9.
    clip = clips.grow_clip(starts, ends, 1, min_time=6.0)
    assert clip == clips.Clip(0.0, 9.0, (1, 0, 2))
    assert clips.grow_clip(starts, ends, 3, min_time=1.0) == clips.Clip(12.0, 14.0, (3,))
    # A tie (both neighbours give the same span) takes the one before, as MCN.
    assert clips.grow_clip([0, 2, 4], [2, 4, 6], 1, min_time=3.0) == clips.Clip(0.0, 4.0, (1, 0))
    # Nothing left to merge: the whole video, however short.
    assert clips.grow_clip([0, 2], [2, 4], 0, min_time=100.0) == clips.Clip(0.0, 4.0, (0, 1))


def test_clip_features_are_cut_pooled_and_padded():
    features = np.zeros((10, 3), dtype=np.float16)
    features[2] = [3, 0, 0]
    features[4] = [0, 4, 0]
    features[6] = [0, 0, 9]
    pooled = clips.video_item(features, 2.4, 4.9)["video"]   # rows int(2.4)=2 .. int(4.9)+1=5 -> 2,3,4
    np.testing.assert_allclose(pooled, [0.6, 0.8, 0.0], rtol=1e-6)
    assert clips.video_item(features, 20.0, 25.0)["video"].tolist() == [0, 0, 0]   # empty window: zeros
    np.testing.assert_allclose(clips.video_item(features, 5.0, math.inf)["video"], [0, 0, 1])

    spectrogram = np.arange(2 * 500, dtype=np.float16).reshape(2, 500)
    item = clips.audio_item(spectrogram, 1.0, 1.5, audio_frames=80)      # frames 100..150: 50 real, 30 padding
    assert item["nframes"] == 50 and item["audio"].shape == (2, 80)
    assert item["audio"][0, 0] == 100 and item["audio"][0, 49] == 149 and not item["audio"][:, 50:].any()
    assert clips.audio_item(spectrogram, 0.0, 4.0, audio_frames=80)["nframes"] == 80   # cut

    table = np.arange(12, dtype=np.float32).reshape(6, 2)
    token_ids = np.array([5, 1, 2, 3])
    text = {"token_ids": token_ids, "vectors": table[token_ids], "offsets": np.array([0, 1, 3, 4])}
    assert clips.clip_tokens(text, clips.Clip(0, 1, (1, 0, 2)), "token_ids").tolist() == [1, 2, 5, 3]  # merge order
    tokens = clips.clip_tokens(text, clips.Clip(0, 1, (1, 0, 2)))
    item = clips.text_item(tokens, max_words=3)
    assert item["mask"].tolist() == [True, True, True]
    assert item["words"].tolist() == [[2, 3], [4, 5], [10, 11]]
    item = clips.text_item(tokens[:1], max_words=3)
    assert item["mask"].tolist() == [True, False, False] and not item["words"][1:].any()
    with pytest.raises(ValueError, match="the model takes 3"):
        clips.text_item(tokens, max_words=3, word_dim=3)


def test_dataset_skips_videos_lacking_a_needed_modality_and_is_seeded(corpus):
    settings = tiny_settings()
    dataset = make_dataset(corpus, settings)
    assert len(dataset) == 5 and dataset.skipped == {"audio:no_audio": 1}
    item = dataset[0]
    assert item["video"].shape == (4, VIDEO_DIM) and item["audio"].shape == (4, N_MELS, 64)
    assert item["words"].shape == (4, 6, WORD_DIM) and item["mask"].shape == (4, 6) and item["nframes"].shape == (4,)
    again = make_dataset(corpus, settings)[0]
    assert all(np.array_equal(item[k], again[k]) for k in item)
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[0]["video"], item["video"])
    # Without audio among the trained modalities, the audio shards are not read and nothing is skipped.
    tv = make_dataset(corpus, tiny_settings(pairs=("tv",)))
    assert len(tv) == 6 and tv.audio is None and "audio" not in tv[0]


def test_dataset_refuses_shards_of_another_word2vec_source_or_rate(corpus, tmp_path):
    paths, source = corpus
    settings = tiny_settings()
    other_paths, other_source = write_corpus(tmp_path / "other", seed=5, shards=1)
    assert other_source != source
    with pytest.raises(ValueError, match="different word2vec sources"):
        make_dataset(({**paths, "text": [*paths["text"], *other_paths["text"]]}, source), settings)
    audio = tmp_path / "audio.h5"
    with ShardWriter(audio, "audio", "tiny", 0, attrs={"hop_ms": 20}) as writer:
        writer.add("vid000", np.zeros((N_MELS, 10), dtype=np.float16))
    with pytest.raises(ValueError, match="hop_ms=20"):
        make_dataset(({**paths, "audio": [audio]}, source), settings)


def test_lr_schedule():
    assert lr_factor(0, "warmup_cosine", 4, 12) == 0.0
    assert lr_factor(2, "warmup_cosine", 4, 12) == 0.5
    assert lr_factor(4, "warmup_cosine", 4, 12) == 1.0
    assert lr_factor(8, "warmup_cosine", 4, 12) == pytest.approx(0.5)
    assert lr_factor(12, "warmup_cosine", 4, 12) == pytest.approx(0.0)
    assert lr_factor(7, "constant", 4, 12) == 1.0


# --- the loop -----------------------------------------------------------------------------------

def test_training_writes_model_and_log_and_resume_after_kill_gives_the_same_weights(corpus, tmp_path):
    settings = tiny_settings(epochs=3, batch_size=2)   # 5 videos: 2 steps per epoch
    straight = Trainer(settings, make_dataset(corpus, settings), tmp_path / "straight", "tiny")
    model_path = straight.run()

    # A run killed in the middle of epoch 3 (its log journal already has rows of that epoch) ...
    killed = Trainer(settings, make_dataset(corpus, settings), tmp_path / "killed", "tiny")
    real_step = killed.train_step

    def dies_before_step_6(batch):
        if killed.step == 5:
            raise KeyboardInterrupt("killed")
        return real_step(batch)

    killed.train_step = dies_before_step_6
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["epoch-0001.pt", "epoch-0002.pt"]
    assert not (tmp_path / "killed" / "model.pt").exists() and not (tmp_path / "killed" / "log.tsv").exists()
    checkpoint = torch.load(tmp_path / "killed" / "checkpoints" / "epoch-0002.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "kmeans", "rng", "epoch", "step", "meta"} <= set(checkpoint)
    assert checkpoint["epoch"] == 2 and checkpoint["step"] == 4 and len(checkpoint["kmeans"]["shared"]["queue"]) == 2
    # MCN queues the first half of each video's clips: 2 videos x 2 of their 4 clips per batch.
    assert [tuple(b.shape) for b in checkpoint["kmeans"]["shared"]["queue"]] == [(4, 32), (4, 32)]
    assert load_model(tmp_path / "killed" / "checkpoints" / "epoch-0002.pt")[1]["epochs_done"] == 2
    # ... and resumed by a fresh process-like start.
    resumed = Trainer(settings, make_dataset(corpus, settings), tmp_path / "killed", "tiny")
    resumed.run()

    a, meta = load_model(model_path)
    b, _ = load_model(tmp_path / "killed" / "model.pt")
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    # Same log too, but for the timings.
    rows_a = [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(tmp_path / "straight" / "log.tsv")]
    rows_b = [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(tmp_path / "killed" / "log.tsv")]
    assert rows_a == rows_b

    # The log: one row per step and one per epoch, every term of the experiment.
    steps_per_epoch = 5 // 2
    assert [r["kind"] for r in rows_a].count("step") == 3 * steps_per_epoch
    assert [r["kind"] for r in rows_a].count("epoch") == 3
    assert set(rows_a[0]) >= {"mms_tv", "mms_ta", "mms_va", "clustering", "reconstruction", "total", "lr"}
    # A step's 8 clips >= 4 clusters: a fit at each epoch's first step (the centroids are reset at
    # every epoch, as MCN), then one every 2 steps of the epoch (here: none, 2 steps per epoch).
    assert [int(r["kmeans_fits"]) for r in rows_a if r["kind"] == "step"] == [1, 1, 2, 2, 3, 3]
    # meta tells evaluation how to rebuild and feed the model.
    assert meta["pairs"] == ["tv", "ta", "va"] and meta["space"] == "shared" and meta["model"]["embd_dim"] == 32
    assert meta["word2vec"] == {"fingerprint": corpus[1]} and meta["training"]["epochs"] == 3
    assert meta["skipped"] == {"audio:no_audio": 1}


def test_clustering_term_is_zero_until_the_queue_can_be_fitted(corpus, tmp_path):
    # 6 videos of 4 clips, 3 per step: 12 clips a step, 6 of them queued (2 per video). Until the
    # queue holds its 3 batches k-means sees one batch (12 < 30 clusters); the fourth step (the second
    # of epoch 2) sees the full queue plus its batch: 18 + 12 = 30 points, the first fit.
    settings = tiny_settings(pairs=("tv",), clusters=30, queue_batches=3, epochs=2, batch_size=3,
                             audio_widths=[8, 8, 8, 8, 8])
    Trainer(settings, make_dataset(corpus, settings), tmp_path, "tv").run()
    rows = [r for r in read_log(tmp_path / "log.tsv") if r["kind"] == "step"]
    assert [float(r["clustering"]) == 0.0 for r in rows] == [True, True, True, False]
    assert [int(r["kmeans_fits"]) for r in rows] == [0, 0, 0, 1]


def test_nan_stops_training_and_names_the_term(corpus, tmp_path):
    settings = tiny_settings(pairs=("tv",))
    trainer = Trainer(settings, make_dataset(corpus, settings), tmp_path, "tv")
    with torch.no_grad():
        trainer.model.decoders["shared"]["video"][0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 1: loss term 'reconstruction'"):
        trainer.run()


def test_short_training_on_learnable_features_lowers_the_loss(tmp_path):
    paths, _ = write_corpus(tmp_path / "corpus", n_videos=8, seconds=16, seed=1, shards=1, topics=32)

    def epoch_means(settings, name):
        train(settings, shards=paths, out_dir=tmp_path / name, experiment=name)
        return [r for r in read_log(tmp_path / name / "log.tsv") if r["kind"] == "epoch"]

    # MMS alone: text and video clips of the same topics find each other (chance: 16 clips per step).
    settings = tiny_settings(pairs=("tv",), epochs=30, batch_size=4, schedule="constant", lr=1e-2)
    settings["losses"]["clustering"]["enabled"] = False
    settings["losses"]["reconstruction"]["enabled"] = False
    epochs = epoch_means(settings, "mms")
    chance = 2 * math.log(4 * 4)
    assert float(epochs[0]["mms_tv"]) > 0.9 * chance
    assert float(epochs[-1]["mms_tv"]) < 0.5 * chance

    # The whole objective (MMS + clustering + reconstruction x 50) goes down too.
    epochs = epoch_means(tiny_settings(pairs=("tv",), epochs=30, batch_size=4, schedule="constant", lr=1e-2), "all")
    assert float(epochs[-1]["total"]) < 0.5 * float(epochs[0]["total"])
    assert float(epochs[-1]["reconstruction"]) < 0.5 * float(epochs[0]["reconstruction"])
    model, meta = load_model(tmp_path / "all" / "model.pt")
    assert model.modalities == ["video", "text"] and not model.training and not hasattr(model, "davenet")


def test_tiny_corpus_smaller_than_batch_trains_as_one_batch(corpus, tmp_path, caplog):
    settings = tiny_settings(pairs=("va",), batch_size=64, epochs=1)
    settings["losses"]["clustering"]["enabled"] = False
    trainer = Trainer(settings, make_dataset(corpus, settings), tmp_path, "va")
    assert trainer.videos_per_step == 5 and trainer.steps_per_epoch == 1
    assert "fewer than batch_size" in caplog.text
    trainer.run()
    model, meta = load_model(tmp_path / "model.pt")
    assert model.modalities == ["video", "audio"] and not hasattr(model, "text_pool")
    assert meta["word2vec"] == {}


def test_resume_never_uses_checkpoints_of_other_settings(corpus, tmp_path, caplog):
    settings = tiny_settings(pairs=("tv",), epochs=1)
    Trainer(settings, make_dataset(corpus, settings), tmp_path, "tv").run()
    other = tiny_settings(pairs=("tv",), epochs=1, lr=0.5)
    Trainer(other, make_dataset(corpus, other), tmp_path, "tv").run()
    assert "other settings" in caplog.text
    fresh = tmp_path / "fresh"
    Trainer(other, make_dataset(corpus, other), fresh, "tv").run()
    changed, _ = load_model(tmp_path / "model.pt")
    scratch, _ = load_model(fresh / "model.pt")
    for key, value in scratch.state_dict().items():
        assert torch.equal(value, changed.state_dict()[key]), key
    # Operational keys (workers, device) may change between runs: the finished run is kept, not redone.
    caplog.clear()
    same = tiny_settings(pairs=("tv",), epochs=1, lr=0.5, num_workers=1)
    Trainer(same, make_dataset(corpus, same), tmp_path, "tv").run()
    assert "other settings" not in caplog.text
    kept, _ = load_model(tmp_path / "model.pt")
    for key, value in changed.state_dict().items():
        assert torch.equal(value, kept.state_dict()[key]), key


def test_cli_trains_with_settings_json_and_workers(corpus, tmp_path):
    paths, _ = corpus
    settings = tiny_settings(pairs=("tv", "ta"), space="per_pair", epochs=1, num_workers=2)
    argv = ["train", "--experiment", "tv_ta_pp", "--seed", "3", "--settings", json.dumps(settings),
            "--text", *map(str, paths["text"]), "--video", *map(str, paths["video"]),
            "--audio", *map(str, paths["audio"]), "--out-dir", str(tmp_path)]
    assert mcnflow_main(argv) == 0
    model, meta = load_model(tmp_path / "model.pt")
    assert model.spaces == ["tv", "ta"] and meta["experiment"] == "tv_ta_pp"
    header = read_log(tmp_path / "log.tsv")[0].keys()
    assert "mms_tv" in header and "mms_ta" in header and "mms_va" not in header

    # The same data through workers and without gives the same weights.
    serial = copy.deepcopy(settings)
    serial["training"]["num_workers"] = 0
    serial_path = train(serial, shards=paths, out_dir=tmp_path / "serial", experiment="tv_ta_pp")
    other, _ = load_model(serial_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key


def test_experiment_settings_from_config_merge_the_training_overrides():
    from mcnflow.core.plan import Plan

    base = tiny_settings()
    config = {"training": base["training"], "corpora": {}, "train_corpus": "x", "evaluation": {"benchmarks": {}},
              "experiments": {"tv_fast": {"pairs": ["tv"], "space": "shared", "losses": base["losses"],
                                          "training": {"lr": 0.5, "epochs": 7}}}}
    settings = Plan(config).settings("train", experiment="tv_fast", seed=1)
    assert settings["pairs"] == ("tv",) and settings["training"]["lr"] == 0.5 and settings["training"]["epochs"] == 7
    assert settings["training"]["embd_dim"] == 32 and config["training"]["lr"] == 1e-3
    with pytest.raises(Exception, match="experiment 'nope' is not in config key 'experiments'"):
        Plan(config).settings("train", experiment="nope", seed=1)


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_same_weights_as_an_uninterrupted_run(corpus, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    paths, _ = corpus
    settings = tiny_settings(pairs=("tv", "va"), epochs=8, batch_size=2)

    def command(out_dir):
        return [sys.executable, "-m", "mcnflow", "train", "--experiment", "kill", "--seed", "3", "--settings", json.dumps(settings),
                "--text", *map(str, paths["text"]), "--video", *map(str, paths["video"]),
                "--audio", *map(str, paths["audio"]), "--out-dir", str(out_dir)]

    # The uninterrupted run in this process; one thread everywhere, so sums add up in the same order.
    train(settings, shards=paths, out_dir=tmp_path / "straight", experiment="kill")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    victim = subprocess.Popen(command(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    second = tmp_path / "killed" / "checkpoints" / "epoch-0002.pt"
    deadline = time.monotonic() + 120
    while not second.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert second.exists() and not (tmp_path / "killed" / "model.pt").exists(), "the run ended before the kill"
    subprocess.run(command(tmp_path / "killed"), env=env, check=True, capture_output=True)

    a, _ = load_model(tmp_path / "straight" / "model.pt")
    b, _ = load_model(tmp_path / "killed" / "model.pt")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert not list((tmp_path / "killed").rglob(".tmp-*"))
    assert not (tmp_path / "killed" / "log.tsv.journal").exists()
    rows = read_log(tmp_path / "killed" / "log.tsv")
    assert [int(r["step"]) for r in rows if r["kind"] == "step"] == list(range(1, 8 * 2 + 1))


def test_no_hdf5_file_is_left_open_for_forked_workers(corpus):
    settings = tiny_settings()
    dataset = make_dataset(corpus, settings)
    Trainer(settings, dataset, "unused", "tiny")   # reads the feature dimensions
    readers = [r for index in (dataset.text, dataset.video, dataset.audio) for r in index.readers]
    assert readers and all(r._file is None for r in readers)


def test_resume_never_uses_checkpoints_trained_on_other_inputs(corpus, tmp_path, caplog):
    """Rewritten features (e.g. a new vocabulary) make the old checkpoints stale, even with equal settings."""
    import os

    settings = tiny_settings(pairs=("tv",), epochs=1)
    Trainer(settings, make_dataset(corpus, settings), tmp_path, "tv").run()
    paths, _ = corpus
    text_shard = paths["text"][0] if isinstance(paths, dict) else paths[0]
    stat = os.stat(text_shard)
    os.utime(text_shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # an upstream job rewrote it
    Trainer(settings, make_dataset(corpus, settings), tmp_path, "tv").run()
    assert "other input files" in caplog.text


def test_a_pair_whose_mms_ends_at_chance_is_warned_about_and_recorded(tmp_path, caplog):
    """Text that says nothing about its clip (every caption the same words) leaves mms_tv at
    2 ln(clips): training warns, the model records it, and evaluation notes it beside the scores."""
    from mcnflow.evaluation.cli import outcome_note
    from mcnflow.evaluation.scoring import choose_scoring
    from mcnflow.training.trainer import mms_chance, pairs_at_chance

    assert mms_chance(16) == pytest.approx(2 * math.log(16))
    assert pairs_at_chance({"mms_tv": 5.548, "mms_ta": 4.0}, ["tv", "ta"], 16) == ["tv"]
    assert pairs_at_chance({"mms_tv": 0.98 * mms_chance(16)}, ["tv"], 16) == []

    paths, _ = write_corpus(tmp_path / "corpus", n_videos=8, seconds=16, seed=1, shards=1, topics=32)
    settings = tiny_settings(pairs=("tv",), epochs=3, batch_size=4, lr=1e-9)   # lr ~0: nothing moves
    settings["losses"]["clustering"]["enabled"] = False
    settings["losses"]["reconstruction"]["enabled"] = False
    train(settings, shards=paths, out_dir=tmp_path / "stuck", experiment="stuck")
    assert "mms_tv ended training at" in caplog.text and "did not learn" in caplog.text
    _, meta = load_model(tmp_path / "stuck" / "model.pt")
    assert meta["mms_at_chance"] == ["tv"] and meta["last_epoch_losses"]["mms_tv"] > 0.99 * mms_chance(16)

    class Outcome:  # what outcome_note reads of a retrieval outcome
        extra, n_missing, n_queries = {}, 0, 32

    scoring = choose_scoring(["tv"], "shared")
    assert "mms_tv ended training at chance" in outcome_note({"task": "retrieval"}, Outcome(), meta, scoring)
    assert outcome_note({"task": "retrieval"}, Outcome(), {"mms_at_chance": []}, scoring) == ""

    # a pair that learns is not flagged (the learnable corpus, MMS alone, lr 1e-2)
    caplog.clear()
    learning = tiny_settings(pairs=("tv",), epochs=30, batch_size=4, schedule="constant", lr=1e-2)
    learning["losses"]["clustering"]["enabled"] = False
    learning["losses"]["reconstruction"]["enabled"] = False
    train(learning, shards=paths, out_dir=tmp_path / "learns", experiment="learns")
    assert "did not learn" not in caplog.text
    assert load_model(tmp_path / "learns" / "model.pt")[1]["mms_at_chance"] == []


def test_a_checkpoint_that_cannot_be_loaded_stops_training_and_restart_is_explicit(corpus, tmp_path):
    from mcnflow.training.trainer import CheckpointError, train
    settings = tiny_settings(pairs=("tv",), epochs=1)
    Trainer(settings, make_dataset(corpus, settings), tmp_path, "tv").run()
    newest = tmp_path / "checkpoints" / "epoch-0001.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # damaged after it was written
    longer = tiny_settings(pairs=("tv",), epochs=2)
    with pytest.raises(CheckpointError, match="epoch-0001.pt cannot be loaded.*--restart"):
        Trainer(longer, make_dataset(corpus, longer), tmp_path, "tv").run()
    assert newest.exists()  # nothing deleted behind the user's back
    # the explicit way past it: --restart trains from scratch
    paths, _ = corpus
    train(longer, shards={name: [str(p) for p in paths[name]] for name in ("text", "video")},
          out_dir=tmp_path, experiment="tv", restart=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-0001.pt", "epoch-0002.pt"]
