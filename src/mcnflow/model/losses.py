"""MCN's loss terms and how an experiment combines them.

Every term is computed in float32 (also under autocast): MCN's similarities are raw dot products of
unnormalised embeddings, which can leave the float16 range.

Terms (unweighted values; ``total = sum(weight * term)`` over enabled terms):
  mms_<pair>       MMS on the pair's similarity matrix, in the pair's space. One term per pair (MCN sums them).
  clustering       CE of each trained modality's embedding against the k-means centroids, with the
                   labels of the fused embedding; averaged over the space's modalities (MCN: the sum
                   of the three modalities' terms / 3; its two-modality ablations also divide by 3,
                   i.e. 2/3 of this mean: docs/fidelity.md). With per_pair spaces each space has its
                   own queue and centroids (fused = mean of the pair's two embeddings) and the term is
                   the mean over spaces. k-means: mcnflow.model.kmeans.
  reconstruction   MSE of each decoder's output against its modality's trunk output, summed over
                   the modalities of a space (MCN's mse_v + mse_a + mse_t) and averaged over spaces.
                   As MCN, the audio and text targets (trunk outputs) are not detached, so this term
                   trains the trunks too; ``detach_targets`` (the departure
                   ``detach_reconstruction_targets``) stops that gradient.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch.nn import functional as F

from mcnflow.model.kmeans import OnlineKMeans
from mcnflow.model.mcn import MCN, PAIRS, MCNOutput

LOSS_TERMS = ("mms", "clustering", "reconstruction")


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the term."""


def mms_loss(x: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Masked margin softmax: S = X Y^T - margin I; CE over rows plus CE over columns (batch means)."""
    similarity = x.float() @ y.float().T
    similarity = similarity - margin * torch.eye(similarity.shape[0], device=similarity.device)
    target = torch.arange(similarity.shape[0], device=similarity.device)
    return F.cross_entropy(similarity, target) + F.cross_entropy(similarity.T, target)


def cluster_loss(embedding: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """CE of ``embedding @ centroids^T - margin * onehot(labels)`` against ``labels`` (MCN's cluster_contrast)."""
    scores = embedding.float() @ centroids.float().T
    scores = scores - margin * F.one_hot(labels, centroids.shape[0]).to(scores.dtype)
    return F.cross_entropy(scores, labels)


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over samples and dimensions."""
    return F.mse_loss(reconstruction.float(), target.float())


def check_finite(terms: Mapping[str, torch.Tensor], step: int) -> None:
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(f"step {step}: loss term '{name}' is {value.item()} (not finite); training stopped")


class MCNObjective:
    """The experiment's loss: which terms, their weights, and the clustering state of each space."""

    def __init__(self, model: MCN, losses: Mapping[str, Mapping], margin: float, clusters: int,
                 kmeans_iters: int, queue_batches: int, seed: int, *, clips_per_video: int | None = None,
                 queue_clips: int | None = None, unit_centroids: bool = False, keep_empty_clusters: bool = False,
                 keep_centroids_across_epochs: bool = False, detach_targets: bool = False):
        """``clips_per_video``: clips of each video in a batch (n_pair); ``queue_clips``: how many of them
        enter the k-means queue (MCN: 16 of 32; None: all). The remaining flags are the departures of
        mcnflow.model.kmeans.OnlineKMeans and ``detach_targets`` for reconstruction; all off = MCN."""
        unknown = set(losses) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss term(s) {sorted(unknown)}; allowed: {', '.join(LOSS_TERMS)}")
        self.model = model
        self.enabled = {name: bool(losses[name]["enabled"]) for name in LOSS_TERMS}
        # A disabled term's weight is never used (and may be absent).
        self.weights = {name: float(losses[name]["weight"]) for name in LOSS_TERMS if self.enabled[name]}
        self.margin = margin
        self.detach_targets = bool(detach_targets)
        if not any(self.enabled.values()):
            raise ValueError("every loss term is disabled: nothing to train")
        if self.enabled["reconstruction"] and model.decoders is None:
            raise ValueError("reconstruction is enabled but the model has no decoders")
        self.kmeans: dict[str, OnlineKMeans] = {}
        if self.enabled["clustering"]:
            self.kmeans = {space: OnlineKMeans(clusters, kmeans_iters, queue_batches, seed,
                                               clips_per_video=clips_per_video, queue_clips=queue_clips,
                                               unit_centroids=unit_centroids, keep_empty_clusters=keep_empty_clusters,
                                               keep_centroids_across_epochs=keep_centroids_across_epochs)
                           for space in model.spaces}

    def start_epoch(self) -> None:
        """Called before each epoch's first step: MCN resets the k-means centroids there."""
        for km in self.kmeans.values():
            km.start_epoch()

    def term_names(self) -> list[str]:
        names = [f"mms_{pair}" for pair in self.model.pairs] if self.enabled["mms"] else []
        return names + [name for name in ("clustering", "reconstruction") if self.enabled[name]]

    def weight_of(self, term: str) -> float:
        return self.weights["mms" if term.startswith("mms_") else term]

    def _clustering(self, output: MCNOutput) -> torch.Tensor:
        per_space = []
        for space, embeddings in output.embeddings.items():
            fused = torch.stack([e.detach().float() for e in embeddings.values()]).mean(dim=0)
            labels = self.kmeans[space].step(fused)
            if labels is None:  # not yet enough points for the first fit
                continue
            centroids = self.kmeans[space].centroids
            per_space.append(torch.stack([cluster_loss(e, centroids, labels, self.margin)
                                          for e in embeddings.values()]).mean())
        if not per_space:
            # Zero, but attached to the graph: a run whose only term is clustering can still step.
            return 0.0 * sum(e.float().sum() for per_mod in output.embeddings.values() for e in per_mod.values())
        return torch.stack(per_space).mean()

    def _reconstruction(self, output: MCNOutput) -> torch.Tensor:
        def target(modality: str) -> torch.Tensor:
            trunk = output.trunk[modality]
            return trunk.detach() if self.detach_targets else trunk

        per_space = [torch.stack([reconstruction_loss(pred, target(m)) for m, pred in preds.items()]).sum()
                     for preds in output.reconstructions.values()]
        return torch.stack(per_space).mean()

    def __call__(self, output: MCNOutput, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> (weighted total, unweighted terms). Raises NonFiniteLossError naming a bad term."""
        terms: dict[str, torch.Tensor] = {}
        if self.enabled["mms"]:
            for pair in self.model.pairs:
                space = self.model.space_of(pair)
                first, second = PAIRS[pair]  # tv: rows text, columns video
                embeddings = output.embeddings[space]
                terms[f"mms_{pair}"] = mms_loss(embeddings[first], embeddings[second], self.margin)
        if self.enabled["clustering"]:
            terms["clustering"] = self._clustering(output)
        if self.enabled["reconstruction"]:
            terms["reconstruction"] = self._reconstruction(output)
        check_finite(terms, step)
        total = sum(self.weight_of(name) * value for name, value in terms.items())
        return total, terms

    def state_dict(self) -> dict:
        return {space: km.state_dict() for space, km in self.kmeans.items()}

    def load_state_dict(self, state: Mapping, device: torch.device | str = "cpu") -> None:
        if set(state) != set(self.kmeans):
            raise ValueError(f"k-means state for spaces {sorted(state)}, expected {sorted(self.kmeans)}")
        for space, km_state in state.items():
            self.kmeans[space].load_state_dict(km_state, device)

