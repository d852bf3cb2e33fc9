"""Online spherical k-means over a queue of recent fused embeddings (MCN's clustering targets).

MCN keeps the fused (mean over modalities) embeddings of the last batches in a queue, refits
k-means with cosine assignment every ``queue_batches`` steps, warm-started from the previous
centroids, and between refits assigns each new batch to the nearest centroid.
Everything here is plain torch so it runs where the model runs (CPU or CUDA) and is deterministic:
the first fit's initial centroids come from a generator seeded by ``seed``, and the centroid means are
one-hot matrix products (not scatter-adds, whose CUDA summation order varies).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F


def assign(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the most cosine-similar centroid for each point."""
    return (F.normalize(points.float(), dim=1) @ F.normalize(centroids.float(), dim=1).T).argmax(dim=1)


def spherical_kmeans(points: torch.Tensor, centroids: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine ``centroids`` (K, D) on ``points`` (N, D) -> (unit-norm centroids, labels of the points).

    Stops early when no assignment changes. An empty cluster keeps its previous centroid.
    """
    x = F.normalize(points.float(), dim=1)
    c = F.normalize(centroids.float().to(x.device), dim=1)
    clusters = c.shape[0]
    labels = None
    for _ in range(iters):
        new_labels = (x @ c.T).argmax(dim=1)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        one_hot = F.one_hot(labels, clusters).to(x.dtype)
        sums = one_hot.T @ x
        counts = one_hot.sum(dim=0)
        c = torch.where((counts > 0).unsqueeze(1), F.normalize(sums, dim=1), c)
    return c, (x @ c.T).argmax(dim=1)


class OnlineKMeans:
    """The queue, the centroids and the refit schedule of one embedding space."""

    def __init__(self, clusters: int, iters: int, queue_batches: int, seed: int):
        self.clusters = clusters
        self.iters = iters
        self.queue_batches = queue_batches
        self.seed = seed
        self.queue: list[torch.Tensor] = []       # oldest first; unit vectors in float16 (cosine only)
        self.centroids: torch.Tensor | None = None
        self.steps_since_fit = 0
        self.fits = 0

    def queue_points(self) -> int:
        return sum(int(batch.shape[0]) for batch in self.queue)

    def push(self, fused: torch.Tensor) -> None:
        # Normalised before the cast: cosine k-means ignores the norm, and unit vectors cannot overflow fp16.
        self.queue.append(F.normalize(fused.detach().float(), dim=1).to(torch.float16))
        del self.queue[:-self.queue_batches]
        self.steps_since_fit += 1

    def fit(self) -> None:
        points = torch.cat(self.queue).float()
        if self.centroids is None:
            generator = torch.Generator().manual_seed(self.seed)
            chosen = torch.randperm(points.shape[0], generator=generator)[: self.clusters].to(points.device)
            init = points[chosen]
        else:
            init = self.centroids
        self.centroids, _ = spherical_kmeans(points, init, self.iters)
        self.steps_since_fit = 0
        self.fits += 1

    def step(self, fused: torch.Tensor) -> torch.Tensor | None:
        """Queue this batch's fused embeddings, refit when due, and return their cluster labels.

        The first fit happens as soon as the queue holds ``clusters`` points, then every
        ``queue_batches`` steps. Before the first fit there are no labels (None).
        """
        self.push(fused)
        due = self.centroids is None or self.steps_since_fit >= self.queue_batches
        if due and self.queue_points() >= self.clusters:
            self.fit()
        if self.centroids is None:
            return None
        return assign(fused, self.centroids)

    def state_dict(self) -> dict[str, Any]:
        return {"queue": [b.cpu() for b in self.queue],
                "centroids": None if self.centroids is None else self.centroids.cpu(),
                "steps_since_fit": self.steps_since_fit, "fits": self.fits,
                "clusters": self.clusters, "iters": self.iters, "queue_batches": self.queue_batches,
                "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str = "cpu") -> None:
        for key in ("clusters", "iters", "queue_batches", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(f"k-means state has {key}={state[key]}, the settings say {getattr(self, key)}")
        self.queue = [b.to(device) for b in state["queue"]]
        self.centroids = None if state["centroids"] is None else state["centroids"].to(device)
        self.steps_since_fit = int(state["steps_since_fit"])
        self.fits = int(state["fits"])
