"""The training set: one item per video = ``n_pair`` clips with the features of the trained modalities.

Reads the HDF5 shards through features.store; the files open lazily in the process that reads them
(each DataLoader worker opens its own), at most ``max_open_files`` descriptors per process
(training.max_open_files), so training runs past the descriptor limit whatever the shard count.
Randomness is a function of (seed, epoch, item), not of which worker reads the item, so a run and its
resumed continuation see the same clips.

The DataLoader fetches a batch with one ``__getitems__`` call: each video's features are read as views
of the mapped shard files and its clips are cut straight into the batch's arrays (in a worker, in
shared memory, so the batch is not copied again on its way to the main process).

Captions define the clip windows, so text shards are always needed; video and audio shards are read
only when that modality is trained. A video lacking any needed modality is skipped (and counted).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from mcnflow.core.streams import NAMES, read_streams, stream, video_by_choice
from mcnflow.features.store import FeatureIndex, ShardFiles, check_rate
from mcnflow.features.text_index import TextIndex
from mcnflow.features.video_index import VideoIndex
from mcnflow.model import inputs as clips


def input_fingerprint(paths: Sequence[str | Path]) -> list[list]:
    """(path, size, mtime) of each input: cheap to compute for terabytes of features, and it changes
    whenever an upstream job rewrites a file, so a checkpoint is never resumed on other inputs."""
    return [[str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in sorted(map(str, paths))]


class ClipDataset(Dataset):
    """``shards``: stream name -> HDF5 shards (mcnflow.core.streams: text, video, video3d, audio).
    Shards of a stream the modalities (and ``video_features``) do not select are not read."""

    def __init__(self, *, shards: Mapping[str, Sequence[str | Path]], video_features: Sequence[str] = ("2d",),
                 modalities: Sequence[str], n_pair: int, min_time: float, max_words: int,
                 audio_frames: int, seed: int, max_open_files: int | None = None):
        self.modalities = list(modalities)
        self.n_pair, self.min_time, self.max_words = n_pair, min_time, max_words
        self.audio_frames, self.seed = audio_frames, seed
        self.epoch = 0
        unknown = sorted(set(shards) - set(NAMES))
        if unknown:
            raise ValueError(f"unknown feature stream(s) {unknown}; streams: {', '.join(NAMES)}")
        self.video_features = list(video_features)
        # captions define the clips: text is read whatever is trained
        read = read_streams({*self.modalities, "text"}, self.video_features)
        for name in read:
            if not shards.get(name):
                raise ValueError(f"{name} shards are needed ({stream(name).description}) but none were given")
        self.input_files = sorted(str(p) for name in read for p in shards[name])
        # one bound on the open shard files of every modality (None: every file stays open)
        self.files = ShardFiles(max_open_files, "training.max_open_files")
        self.text = TextIndex(shards["text"], self.files)
        self.video = self.audio = None
        if "video" in self.modalities:
            # MCN: 2D and 3D features, each pooled and normalised, concatenated (training.video_features)
            self.video = VideoIndex(video_by_choice(shards, self.video_features), "training", self.files)
        if "audio" in self.modalities:
            check_rate(shards["audio"], stream("audio"), "training")
            self.audio = FeatureIndex(shards["audio"], self.files)
        # The word vectors come with the text shards; the checkpoint records which word2vec source
        # they are from, and evaluation requires the same one.
        self.trains_text = "text" in self.modalities
        self.word2vec_info: dict = {"fingerprint": self.text.fingerprint} if self.trains_text else {}
        self.video_ids, self.skipped = self._usable_videos()

    def _usable_videos(self) -> tuple[list[str], Counter]:
        indexes = {"text": self.text, "video": self.video, "audio": self.audio}
        candidates = set()
        for index in indexes.values():
            if index is not None:
                candidates.update(index.status)
        no_captions = set()
        for reader in self.text.readers:
            no_captions.update(row["video_id"] for row in reader.index() if row["status"] == "ok" and row["length"] == 0)
            reader.close()
        usable, skipped = [], Counter()
        for video_id in sorted(candidates):
            missing = [f"{name}:{index.status.get(video_id, 'absent')}" for name, index in indexes.items()
                       if index is not None and video_id not in index]
            if video_id in no_captions:
                missing.append("text:no_captions")
            if missing:
                skipped.update(missing)
            else:
                usable.append(video_id)
        return usable, skipped

    def feature_dims(self) -> dict[str, int]:
        """Dimensions seen in the data (first usable video), to check against the model settings."""
        if not self.video_ids:
            raise ValueError("no usable videos")
        video_id = self.video_ids[0]
        dims: dict[str, int] = {}
        try:
            if self.video is not None:
                dims["video_dim"] = sum(int(f.shape[1]) for f in self.video.read(video_id).values())
            if self.audio is not None:
                dims["n_mels"] = int(self.audio.read(video_id).shape[0])
        finally:
            self.close()  # no open HDF5 handle may be inherited by forked DataLoader workers
        if self.trains_text:
            dims["word_dim"] = int(self.text.dim or 0)
        return dims

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """One video: ``n_pair`` clips of each trained modality (arrays with a leading clip axis)."""
        return {key: value[0].numpy() for key, value in self._batch([index], shared=False).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch of videos (what the DataLoader asks for): tensors (videos, n_pair, ...)."""
        return self._batch(indices, shared=get_worker_info() is not None)

    def _batch(self, indices: Sequence[int], shared: bool) -> dict[str, torch.Tensor]:
        arrays: dict[str, np.ndarray] = {}
        tensors: dict[str, torch.Tensor] = {}
        for row, index in enumerate(indices):
            video_id = self.video_ids[index]
            rng = np.random.default_rng([self.seed, 1, self.epoch, index])
            try:
                text = self.text.view(video_id)
                sampled = clips.sample_clips(text["start"], text["end"], self.n_pair, self.min_time, rng)
                video = self.video.view(video_id) if self.video is not None else None
                audio = self.audio.view(video_id) if self.audio is not None else None
                vocabulary = self.text.vocabulary(video_id) if self.trains_text else None
                if not tensors:
                    tensors = self._allocate(len(indices), video, audio, vocabulary, shared)
                    arrays = {key: tensor.numpy() for key, tensor in tensors.items()}
                if video is not None:
                    clips.video_clips(video, sampled, arrays["video"][row])
                if audio is not None:
                    clips.audio_clips(audio, sampled, self.audio_frames, arrays["audio"][row], arrays["nframes"][row])
                if vocabulary is not None:
                    clips.text_clips(text, vocabulary, sampled, self.max_words, arrays["words"][row], arrays["mask"][row])
            except ValueError as exc:
                raise ValueError(f"video {video_id}: {exc}") from exc
        return tensors

    def _allocate(self, videos: int, video: dict[str, np.ndarray] | None, audio: np.ndarray | None,
                  vocabulary: np.ndarray | None, shared: bool) -> dict[str, torch.Tensor]:
        """The batch's tensors, keyed and typed as MCN reads them (model.inputs), sized from one video."""
        clip_shape = (videos, self.n_pair)
        layout: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        if video is not None:
            layout["video"] = ((*clip_shape, sum(int(v.shape[1]) for v in video.values())), np.dtype(np.float32))
        if audio is not None:
            layout["audio"] = ((*clip_shape, int(audio.shape[0]), self.audio_frames), np.dtype(np.float16))
            layout["nframes"] = (clip_shape, np.dtype(np.int64))
        if vocabulary is not None:
            layout["words"] = ((*clip_shape, self.max_words, int(vocabulary.shape[1])), np.dtype(np.float32))
            layout["mask"] = ((*clip_shape, self.max_words), np.dtype(bool))
        return {key: _empty(shape, dtype, shared) for key, (shape, dtype) in layout.items()}

    def close(self) -> None:
        for index in (self.text, self.video, self.audio):
            if index is not None:
                index.close()


class EpochPermutation(Sampler[int]):
    """A fresh order of the videos each epoch, drawn from (seed, epoch) alone."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(np.random.default_rng([self.seed, 0, self.epoch]).permutation(self.size).tolist())

    def __len__(self) -> int:
        return self.size


def _empty(shape: tuple[int, ...], dtype: np.dtype, shared: bool) -> torch.Tensor:
    """An uninitialised tensor; ``shared``: in shared memory, where a DataLoader worker's batch must be
    for the main process to map it (torch would otherwise copy it there when the batch is sent)."""
    if not shared:
        # numpy asks for huge pages on large arrays: measured ~7x less CPU than torch.empty's first touch
        return torch.from_numpy(np.empty(shape, dtype))
    torch_dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * dtype.itemsize)
    return torch.empty(0, dtype=torch_dtype).set_(storage, 0, shape)


def collate_videos(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader's collate_fn: ClipDataset.__getitems__ already returns the batch's tensors."""
    return batch


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in each worker from torch's per-worker seed (itself from the loader's generator)."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
