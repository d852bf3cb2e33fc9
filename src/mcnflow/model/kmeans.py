"""Online k-means over a queue of recent fused embeddings (MCN's clustering targets).

What MCN does (train_tri_kmeans.py @808948b, with fast_pytorch_kmeans @4f610fb in mode 'cosine'):

* k-means itself (fast_pytorch_kmeans kmeans.py:140-233): each point goes to the centroid of highest
  cosine similarity; each centroid then becomes the plain mean of its (unnormalised) points, and a
  cluster that got no point becomes the zero vector. It stops once the centroids move by at most
  ``tol`` (summed squared change) or after ``max_iter`` rounds, and returns the assignment of its last
  round. A first fit starts from ``clusters`` distinct points drawn at random.
* the queue (train:235-252, :460): the first 16 of each video's 32 clips of the last ``queue_size``
  (20) batches. Once the queue is full, k-means sees the queue plus the whole current batch
  (queue before this batch is pushed); before that, the current batch only.
* the schedule (train:347-352, :470-471): a fit at every ``queue_size``-th step of an epoch, counted
  from the epoch's first step, warm-started from the current centroids; between fits the batch is
  assigned to the nearest centroid. The centroids are dropped at the start of every epoch, so each
  epoch's first fit starts again from random points.

Departures, each off by default (``training.departures`` in config.yaml, docs/fidelity.md):
``unit_centroids`` (spherical k-means: unit points, unit centroids; changes the cluster loss's logit
scale), ``keep_empty_clusters`` (an empty cluster keeps its centroid), and
``keep_centroids_across_epochs`` (no reset at the epoch start: that fit is warm-started too).

Everything is plain torch so it runs where the model runs and is deterministic: a cold fit's random
points come from a generator seeded by ``seed`` and the number of fits so far, and the centroid means
are one-hot matrix products (not scatter-adds, whose CUDA summation order varies).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

# fast_pytorch_kmeans' defaults, which MCN keeps (KMeans(n_clusters=256, mode='cosine')).
KMEANS_TOL = 1e-4
COSINE_EPS = 1e-8   # fast_pytorch_kmeans cos_sim: a / (|a| + 1e-8), so a zero centroid scores 0 with every point


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + COSINE_EPS)


def cosine_similarity(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, D) x (K, D) -> (N, K) cosine similarities; a zero vector has similarity 0 with everything."""
    return _unit(points.float()) @ _unit(centroids.float().to(points.device)).T


def assign(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the most cosine-similar centroid for each point."""
    return cosine_similarity(points, centroids).argmax(dim=1)


def cosine_kmeans(points: torch.Tensor, centroids: torch.Tensor, iters: int, tol: float = KMEANS_TOL, *,
                  unit_centroids: bool = False, keep_empty_clusters: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine ``centroids`` (K, D) on ``points`` (N, D) -> (centroids, labels of the last assignment).

    Cosine assignment; by default each centroid is the plain mean of its points as given (their norms
    count) and an empty cluster becomes zero, as fast_pytorch_kmeans. ``unit_centroids``: the mean of
    the unit-length points, normalised (spherical k-means). ``keep_empty_clusters``: a cluster without
    points keeps its centroid. Stops when the centroids' summed squared change is at most ``tol``.
    """
    x = points.float()
    data = _unit(x) if unit_centroids else x
    c = centroids.float().to(x.device)
    if unit_centroids:
        c = _unit(c)
    clusters = c.shape[0]
    if iters < 1:
        raise ValueError(f"k-means needs at least one iteration, got {iters}")
    for _ in range(iters):
        labels = assign(data, c)
        one_hot = F.one_hot(labels, clusters).to(data.dtype)
        counts = one_hot.sum(dim=0)
        means = (one_hot.T @ data) / counts.clamp(min=1).unsqueeze(1)   # an empty cluster: 0 / 1 = 0
        if unit_centroids:
            means = _unit(means)
        if keep_empty_clusters:
            means = torch.where((counts > 0).unsqueeze(1), means, c)
        moved = (means - c).pow(2).sum()
        c = means
        if moved <= tol:
            break
    return c, labels


class OnlineKMeans:
    """The queue, the centroids and the refit schedule of one embedding space.

    ``queue_batches``: the queue holds this many batches and a fit happens every this many steps of an
    epoch (MCN's ``queue_size``, 20). ``clips_per_video`` / ``queue_clips``: a batch's rows are
    ``clips_per_video`` clips of each video in turn, and only the first ``queue_clips`` of each video
    are queued (MCN: 16 of 32); None queues every row.
    """

    def __init__(self, clusters: int, iters: int, queue_batches: int, seed: int, *,
                 clips_per_video: int | None = None, queue_clips: int | None = None,
                 unit_centroids: bool = False, keep_empty_clusters: bool = False,
                 keep_centroids_across_epochs: bool = False, tol: float = KMEANS_TOL):
        if queue_clips is not None and (clips_per_video is None or not 1 <= queue_clips <= clips_per_video):
            raise ValueError(f"queue_clips {queue_clips} needs 1 <= queue_clips <= clips per video "
                             f"({clips_per_video})")
        self.clusters = clusters
        self.iters = iters
        self.queue_batches = queue_batches
        self.seed = seed
        self.clips_per_video = clips_per_video
        self.queue_clips = queue_clips
        self.unit_centroids = unit_centroids
        self.keep_empty_clusters = keep_empty_clusters
        self.keep_centroids_across_epochs = keep_centroids_across_epochs
        self.tol = tol
        self.queue: list[torch.Tensor] = []       # oldest first; raw fused embeddings in float32 (as MCN)
        self.centroids: torch.Tensor | None = None
        self.step_in_epoch = 0
        self.fits = 0

    _OPTIONS = ("clusters", "iters", "queue_batches", "seed", "clips_per_video", "queue_clips",
                "unit_centroids", "keep_empty_clusters", "keep_centroids_across_epochs", "tol")

    def queue_points(self) -> int:
        return sum(int(batch.shape[0]) for batch in self.queue)

    def queue_full(self) -> bool:
        return len(self.queue) >= self.queue_batches

    def queued_rows(self, fused: torch.Tensor) -> torch.Tensor:
        """The rows of a batch that enter the queue: the first ``queue_clips`` clips of each video."""
        if self.queue_clips is None:
            return fused
        rows, dim = fused.shape
        if rows % self.clips_per_video:
            raise ValueError(f"a batch of {rows} rows is not whole videos of {self.clips_per_video} clips")
        return fused.reshape(-1, self.clips_per_video, dim)[:, : self.queue_clips].reshape(-1, dim)

    def push(self, fused: torch.Tensor) -> None:
        self.queue.append(self.queued_rows(fused.detach().float()).clone())
        del self.queue[:-self.queue_batches]

    def start_epoch(self) -> None:
        """An epoch begins: the fit schedule restarts, and the centroids go (unless kept across epochs)."""
        self.step_in_epoch = 0
        if not self.keep_centroids_across_epochs:
            self.centroids = None

    def fit(self, points: torch.Tensor) -> torch.Tensor:
        """Fit on ``points`` (warm-started when there are centroids) -> the labels of ``points``."""
        if self.centroids is None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.fits)
            chosen = torch.randperm(points.shape[0], generator=generator)[: self.clusters].to(points.device)
            init = points[chosen]
        else:
            init = self.centroids
        self.centroids, labels = cosine_kmeans(points, init, self.iters, self.tol,
                                               unit_centroids=self.unit_centroids,
                                               keep_empty_clusters=self.keep_empty_clusters)
        self.fits += 1
        return labels

    def step(self, fused: torch.Tensor) -> torch.Tensor | None:
        """This batch's cluster labels (None before any fit was possible); then queue the batch.

        A fit is due at the epoch's step 0, queue_batches, 2 * queue_batches, ... and whenever there
        are no centroids; it runs on the queue plus this batch once the queue is full, else on this
        batch alone. A cold fit needs at least ``clusters`` points, else it waits for a later step.
        """
        fused = fused.detach().float()
        points = torch.cat([*self.queue, fused]) if self.queue_full() else fused
        due = self.centroids is None or self.step_in_epoch % self.queue_batches == 0
        labels = None
        if due and (self.centroids is not None or points.shape[0] >= self.clusters):
            labels = self.fit(points)[-fused.shape[0]:]
        elif self.centroids is not None:
            labels = assign(fused, self.centroids)
        self.push(fused)
        self.step_in_epoch += 1
        return labels

    def state_dict(self) -> dict[str, Any]:
        return {"queue": [b.cpu() for b in self.queue],
                "centroids": None if self.centroids is None else self.centroids.cpu(),
                "step_in_epoch": self.step_in_epoch, "fits": self.fits,
                **{key: getattr(self, key) for key in self._OPTIONS}}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        for key in self._OPTIONS:
            if state.get(key) != getattr(self, key):
                raise ValueError(f"k-means state has {key}={state.get(key)}, the settings say {getattr(self, key)}")
        self.queue = [b.to(device) for b in state["queue"]]
        self.centroids = None if state["centroids"] is None else state["centroids"].to(device)
        self.step_in_epoch = int(state["step_in_epoch"])
        self.fits = int(state["fits"])
