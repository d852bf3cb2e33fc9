"""Training past the descriptor limit (issue 18, items 3 and 7): a bounded set of open shard files, the
EMFILE message, and the batched loader delivering exactly the clips of the one-clip functions."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mcnflow.features.store import IncompleteShardError, ShardFiles, ShardReader, ShardWriter
from mcnflow.features.text_index import TextIndex
from mcnflow.model import inputs as clips
from mcnflow.training.dataset import ClipDataset
from mcnflow.training.trainer import Trainer

from test_training import VIDEO_DIM, tiny_settings, write_corpus


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see conftest.one_torch_thread)."""


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def dataset_of(paths, settings, **options):
    t = settings["training"]
    return ClipDataset(shards={name: paths[name] for name in ("text", "video", "audio")},
                       modalities=["video", "audio", "text"], n_pair=t["n_pair"], min_time=t["min_time"],
                       max_words=t["max_words"], audio_frames=t["audio_frames"], seed=t["seed"], **options)


# --- the batched clips are the one-clip functions' clips ------------------------------------------

def test_batched_clip_cutting_equals_the_one_clip_functions():
    rng = np.random.default_rng(4)
    two = rng.normal(size=(40, 64)).astype(np.float16)
    three = rng.normal(size=(60, 32)).astype(np.float16)
    two[10:13] = 0  # a window of zeros: norm 0, left unnormalised
    spectrogram = rng.normal(size=(6, 4000)).astype(np.float16)
    vocabulary = rng.normal(size=(50, 7)).astype(np.float32)
    starts = np.array([0.0, 3.5, 10.2, 10.9, 25.0, 37.0], np.float32)
    ends = np.array([3.0, 9.9, 10.8, 12.0, 30.0, 39.5], np.float32)
    offsets = np.array([0, 4, 4, 9, 30, 33, 40])  # caption 1 has no words, caption 3 has 21
    text = {"token_ids": rng.integers(0, 50, 40).astype(np.int32), "offsets": offsets, "start": starts, "end": ends}
    sampled = [clips.grow_clip(starts, ends, i, min_time) for i in range(6) for min_time in (0.0, 4.0, 100.0)]
    sampled += [clips.Clip(10.2, 12.0, (2,)), clips.Clip(45.0, 50.0, (5,)), clips.Clip(30.0, math.inf, (4, 5))]
    n = len(sampled)

    video = np.full((n, 96), np.nan, np.float32)
    clips.video_clips({"2d": two, "3d": three}, sampled, video)
    audio, nframes = np.full((n, 6, 700), np.nan, np.float16), np.full(n, -1, np.int64)
    clips.audio_clips(spectrogram, sampled, 700, audio, nframes)
    words, mask = np.full((n, 20, 7), np.nan, np.float32), np.ones((n, 20), bool)
    clips.text_clips(text, vocabulary, sampled, 20, words, mask)
    vectors = {**text, "vectors": vocabulary[text["token_ids"]]}
    for i, clip in enumerate(sampled):
        one = clips.video_item({"2d": two, "3d": three}, clip.start, clip.end)["video"]
        assert one.tobytes() == video[i].tobytes(), clip  # bit for bit
        item = clips.audio_item(spectrogram, clip.start, clip.end, 700)
        assert np.array_equal(item["audio"], audio[i]) and item["nframes"] == nframes[i], clip
        item = clips.text_item(clips.clip_tokens(vectors, clip), 20)
        assert np.array_equal(item["words"], words[i]) and np.array_equal(item["mask"], mask[i]), clip
    assert not video[sampled.index(clips.Clip(45.0, 50.0, (5,)))].any()  # past the end: zeros
    assert mask.sum(axis=1).max() == 20 and nframes.max() == 700 and nframes.min() == 0


@pytest.mark.parametrize("compression", [None, "lzf"])
def test_dataset_items_are_the_clips_of_the_one_clip_reference(tmp_path, compression):
    """What the loader delivers: the clips the per-clip functions cut from ShardReader's reads (the
    loader before the batched one), for every video and two epochs; lzf shards go through h5py."""
    paths, _ = write_corpus(tmp_path, n_videos=5, shards=2, seconds=30)
    if compression:
        for modality, group in paths.items():
            for path in group:
                reader = ShardReader(path)
                rows = reader.index()
                attrs = reader.attrs
                with ShardWriter(path, modality, "tiny", attrs["shard"], attrs=attrs, compression=compression) as w:
                    if modality == "text":
                        w.add_word_table(*reader.word_table())
                    for row in rows:
                        w.add(row["video_id"], reader.read(row["video_id"]))
                reader.close()
        with h5py.File(paths["video"][0]) as handle:
            assert handle["videos"]["vid000"].compression == "lzf"
    settings = tiny_settings(n_pair=6, min_time=5.0)
    t = settings["training"]
    dataset = dataset_of(paths, settings)
    readers = {m: [ShardReader(p) for p in group] for m, group in paths.items()}

    def read(modality, video_id):
        reader = next(r for r in readers[modality] if video_id in r)
        return reader.read(video_id), reader

    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        for index, video_id in enumerate(dataset.video_ids):
            rng = np.random.default_rng([t["seed"], 1, epoch, index])
            text, reader = read("text", video_id)
            text["vectors"] = reader.word_table()[1][text["token_ids"]]
            sampled = clips.sample_clips(text["start"], text["end"], t["n_pair"], t["min_time"], rng)
            video, spectrogram = read("video", video_id)[0], read("audio", video_id)[0]
            expected = clips.stack_items([{**clips.video_item(video, c.start, c.end),
                                           **clips.audio_item(spectrogram, c.start, c.end, t["audio_frames"]),
                                           **clips.text_item(clips.clip_tokens(text, c), t["max_words"])}
                                          for c in sampled])
            item = dataset[index]
            assert list(item) == ["video", "audio", "nframes", "words", "mask"]
            for key, value in expected.items():
                assert item[key].dtype == value.dtype and item[key].tobytes() == value.tobytes(), (epoch, video_id, key)
    batch = dataset.__getitems__([3, 0, 2])
    assert batch["video"].shape == (3, t["n_pair"], VIDEO_DIM)
    assert np.array_equal(batch["words"][1].numpy(), dataset[0]["words"])


def test_text_index_gathers_word_vectors_without_keeping_tables(tmp_path):
    paths, _ = write_corpus(tmp_path, n_videos=4, shards=2)
    index = TextIndex(paths["text"])
    reader = ShardReader(paths["text"][1])
    fields = index.read("vid003")
    assert np.array_equal(fields["vectors"], reader.word_table()[1][reader.read("vid003")["token_ids"]])
    assert index.dim == reader.word_table()[1].shape[1] and len(index.files) == 0


# --- a bounded number of open files ------------------------------------------------------------

def test_open_shard_files_stay_within_the_bound(tmp_path):
    paths, _ = write_corpus(tmp_path, n_videos=12, shards=12, seconds=6)
    files = ShardFiles(max_open_files=6)
    before = open_descriptors()
    for _ in range(2):
        for path in paths["video"] + paths["audio"]:
            reader = ShardReader(path)
            video_id = reader.video_ids()[0]
            reader.close()
            assert files.read(path, f"videos/{video_id}").shape[0] > 0
            assert len(files) <= 3 and open_descriptors() - before <= 6
    assert files.opened == 48  # every read was of a file that had been closed: 24 files, twice
    files.close()
    assert open_descriptors() == before
    with pytest.raises(ValueError, match="takes 2 file descriptors"):
        ShardFiles(max_open_files=1, setting="training.max_open_files")


def test_no_shard_file_is_open_when_the_loader_forks_its_workers(tmp_path):
    paths, _ = write_corpus(tmp_path, n_videos=6, shards=2)
    settings = tiny_settings()
    dataset = dataset_of(paths, settings, max_open_files=8)
    dataset[0]
    assert len(dataset.files) > 0
    Trainer(settings, dataset, tmp_path / "out", "tiny")  # reads the feature dimensions, then closes
    assert len(dataset.files) == 0


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one():
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)  # anyone may lower a hard limit
    code = "from mcnflow.features.store import raise_descriptor_limit; print(*raise_descriptor_limit())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))).stdout
    assert out.split() == ["64", str(hard), str(hard)]


# --- training under `ulimit -n` -----------------------------------------------------------------

def train_command(paths, out_dir, **training):
    settings = tiny_settings(pairs=("tv", "ta", "va"), epochs=1, **training)
    return [sys.executable, "-m", "mcnflow", "train", "--experiment", "tiny", "--seed", "3",
            "--settings", json.dumps(settings), "--text", *map(str, paths["text"]),
            "--video", *map(str, paths["video"]), "--audio", *map(str, paths["audio"]), "--out-dir", str(out_dir)]


def run_limited(command, limit, timeout=300):
    """Run ``command`` as `ulimit -n limit` would (soft and hard limit), with one thread per process."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"},
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))


@pytest.mark.parametrize("shards,limit", [(300, 256), (1220, 1024)])
def test_training_reads_every_shard_under_ulimit(tmp_path, shards, limit):
    """Three files per shard, more than the limit allows open at once: one epoch through two
    DataLoader workers (each its own process under the limit) reads every video of every shard."""
    paths, _ = write_corpus(tmp_path / "corpus", n_videos=shards, shards=shards, seconds=6, caption_seconds=2.0)
    assert 3 * shards > limit
    result = run_limited(train_command(paths, tmp_path / "out", batch_size=shards // 4, num_workers=2), limit)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"soft limit (ulimit -n) {limit}; hard limit {limit}" in result.stderr
    rows = [line.split("\t") for line in (tmp_path / "out" / "log.tsv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows].count("step") == 4  # every video, in batches of shards / 4


def test_running_out_of_descriptors_names_the_limit_and_the_setting(tmp_path):
    """A bound above `ulimit -n`: the error says so, names both, and does not call the shard damaged."""
    paths, _ = write_corpus(tmp_path / "corpus", n_videos=200, shards=200, seconds=6)
    result = run_limited(train_command(paths, tmp_path / "out", batch_size=50, max_open_files=1024), 128)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "OpenFilesLimitError" in message and "too many open files (errno 24, EMFILE)" in message, message
    assert "may hold 128 file descriptors" in message and "training.max_open_files = 1024" in message, message
    assert "cannot be opened as HDF5" not in message and "shard itself is not at fault" in message


def test_a_shard_that_is_not_hdf5_keeps_its_own_message(tmp_path):
    paths, _ = write_corpus(tmp_path, n_videos=4, shards=2)
    settings = tiny_settings()
    dataset = dataset_of(paths, settings, max_open_files=4)
    broken = paths["audio"][1]
    broken.write_bytes(b"not an HDF5 file " * 100)  # after the index was read: the reader finds it
    video_id = next(v for v in dataset.video_ids if v in ShardReader(paths["text"][1]))
    with pytest.raises(IncompleteShardError, match=r"shard-00001\.h5: cannot be opened as HDF5 \(.*signature"):
        dataset[dataset.video_ids.index(video_id)]
    with pytest.raises(IncompleteShardError, match="cannot be opened as HDF5"):
        dataset_of(paths, settings, max_open_files=4)  # and when the index is read
    with h5py.File(broken, "w") as handle:  # an HDF5 file, but a killed writer's
        handle.attrs["format"] = "mcnflow-features"
        handle.attrs["complete"] = False
    with pytest.raises(IncompleteShardError, match="not a complete mcnflow-features file"):
        ShardFiles(4).read(broken, "index/status")
