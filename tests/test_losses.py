"""MCN's loss terms against hand-computed values, the objective's pair selection, and k-means."""

from __future__ import annotations

import math

import pytest
import torch

from mcnflow.model import MCN
from mcnflow.model.kmeans import OnlineKMeans, assign, cosine_kmeans
from mcnflow.model.losses import (MCNObjective, NonFiniteLossError, check_finite, cluster_loss, mms_loss,
                                  reconstruction_loss)


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see conftest.one_torch_thread)."""


def ce(logits, target):
    """-log softmax(logits)[target], written out."""
    return -(logits[target] - math.log(sum(math.exp(v) for v in logits)))


LOSSES = {"mms": {"enabled": True, "weight": 1.0}, "clustering": {"enabled": True, "weight": 2.0},
          "reconstruction": {"enabled": True, "weight": 50.0}}


def test_mms_two_by_two_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # S = X Y^T = [[1, 1], [0, 1]]; minus 0.1 on the diagonal = [[0.9, 1], [0, 0.9]]
    rows = (ce([0.9, 1.0], 0) + ce([0.0, 0.9], 1)) / 2
    columns = (ce([0.9, 0.0], 0) + ce([1.0, 0.9], 1)) / 2
    assert mms_loss(x, y, margin=0.1).item() == pytest.approx(rows + columns, rel=1e-6)


def test_mms_three_by_three_by_hand():
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 3.0], [1.0, -1.0]])
    # S = [[2, 0, 2], [0, 3, -1], [1, 3, 0]]; margin 0.5 on the diagonal.
    s = [[1.5, 0.0, 2.0], [0.0, 2.5, -1.0], [1.0, 3.0, -0.5]]
    rows = sum(ce(s[i], i) for i in range(3)) / 3
    columns = sum(ce([s[r][i] for r in range(3)], i) for i in range(3)) / 3
    assert mms_loss(x, y, margin=0.5).item() == pytest.approx(rows + columns, rel=1e-6)
    # No temperature, no normalisation: scaling the embeddings changes the loss.
    assert mms_loss(3 * x, y, margin=0.5).item() != pytest.approx(mms_loss(x, y, margin=0.5).item())


def test_cluster_loss_by_hand():
    embedding = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    # scores = [[1, 0], [0, 2]]; minus 0.5 at the label: [[0.5, 0], [-0.5, 2]]
    expected = (ce([0.5, 0.0], 0) + ce([-0.5, 2.0], 0)) / 2
    assert cluster_loss(embedding, centroids, labels, margin=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_reconstruction_mse_by_hand():
    prediction = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert reconstruction_loss(prediction, target).item() == pytest.approx((1 + 4 + 0 + 1) / 4)


def test_check_finite_names_the_step_and_term():
    check_finite({"mms_tv": torch.tensor(1.0)}, step=3)
    with pytest.raises(NonFiniteLossError, match="step 7: loss term 'clustering'"):
        check_finite({"mms_tv": torch.tensor(1.0), "clustering": torch.tensor(float("inf"))}, step=7)


def tiny_model(pairs, space="shared", reconstruction=True):
    torch.manual_seed(0)
    return MCN(pairs, space, embd_dim=8, video_dim=6, word_dim=4, recon_size=5, reconstruction=reconstruction,
               n_mels=4, audio_widths=[4, 4, 4, 4, 8])


def tiny_batch(clips=8):
    torch.manual_seed(1)
    return {"video": torch.rand(clips, 6), "audio": torch.randn(clips, 4, 32), "nframes": torch.full((clips,), 32),
            "words": torch.randn(clips, 3, 4), "mask": torch.ones(clips, 3, dtype=torch.bool)}


def objective_for(model, losses=LOSSES, clusters=2):
    return MCNObjective(model, losses, margin=0.001, clusters=clusters, kmeans_iters=5, queue_batches=2, seed=0)


def test_objective_terms_follow_the_pairs_and_weights():
    model = tiny_model(["tv"])
    objective = objective_for(model)
    total, terms = objective(model(tiny_batch()), step=1)
    assert list(terms) == ["mms_tv", "clustering", "reconstruction"]
    assert total.item() == pytest.approx(terms["mms_tv"].item() + 2 * terms["clustering"].item()
                                         + 50 * terms["reconstruction"].item(), rel=1e-6)
    model = tiny_model(["ta", "va"])
    _, terms = objective_for(model)(model(tiny_batch()), step=1)
    assert sorted(terms) == ["clustering", "mms_ta", "mms_va", "reconstruction"]
    # The MMS term of a pair is the MMS of that pair's two embeddings.
    output = model(tiny_batch())
    shared = output.embeddings["shared"]
    assert terms["mms_va"].item() == pytest.approx(mms_loss(shared["video"], shared["audio"], 0.001).item(), rel=1e-5)
    disabled = {**LOSSES, "clustering": {"enabled": False, "weight": 1.0},
                "reconstruction": {"enabled": False, "weight": 50.0}}
    _, terms = objective_for(tiny_model(["tv"], reconstruction=False), disabled)(
        tiny_model(["tv"], reconstruction=False)(tiny_batch()), step=1)
    assert list(terms) == ["mms_tv"]
    with pytest.raises(ValueError, match="no decoders"):
        objective_for(tiny_model(["tv"], reconstruction=False))


def test_clustering_is_zero_before_the_first_fit_then_ce_against_the_centroids():
    model = tiny_model(["tv"])
    # 8 clips a step, 12 clusters: a step alone is too few points; the queue (2 batches) is full after
    # step 2, so step 3 fits on the queue plus its own batch (24 points).
    objective = objective_for(model, clusters=12)
    for step in (1, 2):
        _, terms = objective(model(tiny_batch()), step=step)
        assert terms["clustering"].item() == 0.0 and objective.kmeans["shared"].centroids is None
    _, terms = objective(model(tiny_batch()), step=3)
    km = objective.kmeans["shared"]
    assert km.fits == 1 and km.centroids.shape == (12, 8) and terms["clustering"].item() > 0
    output = model(tiny_batch())
    _, terms = objective(output, step=4)              # between fits: nearest centroid by cosine
    assert km.fits == 1
    embeddings = output.embeddings["shared"]
    fused = (embeddings["video"] + embeddings["text"]) / 2
    labels = assign(fused, km.centroids)
    expected = (cluster_loss(embeddings["video"], km.centroids, labels, 0.001)
                + cluster_loss(embeddings["text"], km.centroids, labels, 0.001)) / 2
    assert terms["clustering"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_pair_clustering_keeps_one_queue_per_space():
    model = tiny_model(["tv", "ta"], space="per_pair")
    objective = objective_for(model)
    objective(model(tiny_batch()), step=1)
    assert sorted(objective.kmeans) == ["ta", "tv"]
    assert all(km.fits == 1 for km in objective.kmeans.values())
    assert not torch.equal(objective.kmeans["tv"].queue[0], objective.kmeans["ta"].queue[0])


def test_cosine_kmeans_separates_directions_with_raw_or_unit_centroids():
    generator = torch.Generator().manual_seed(0)
    directions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    truth = torch.arange(3).repeat_interleave(20)
    scales = torch.rand(60, 1, generator=generator) * 5 + 0.5     # cosine: the norm must not matter
    points = (directions[truth] + 0.1 * torch.randn(60, 3, generator=generator)) * scales
    init = points[[0, 1, 2]]                                        # a bad start: all from cluster 0
    for unit in (False, True):
        centroids, labels = cosine_kmeans(points, init, iters=50, unit_centroids=unit)
        if unit:
            assert torch.allclose(centroids.norm(dim=1), torch.ones(3))
        else:                                                       # MCN: the raw means keep the points' scale
            assert torch.allclose(centroids, torch.stack([points[labels == k].mean(dim=0) for k in range(3)]))
        # Same partition as the truth, up to the cluster names.
        mapping = {int(t): int(l) for t, l in zip(truth, labels)}
        assert len(set(mapping.values())) == 3
        assert all(mapping[int(t)] == int(l) for t, l in zip(truth, labels))


def test_online_kmeans_schedule_and_state_round_trip():
    km = OnlineKMeans(clusters=4, iters=5, queue_batches=3, seed=0)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 5, generator=generator) for _ in range(10)]
    fits, labelled = [], []
    for batch in batches[:8]:
        labels = km.step(batch)
        fits.append(km.fits)
        labelled.append(labels is not None and labels.shape == (3,))
    # A batch alone (3 points) is too few for 4 clusters; the queue is full after 3 steps, so step 4
    # fits on 9 + 3 points; then a refit at every third step of the epoch (steps 7, 10, ...).
    assert fits == [0, 0, 0, 1, 1, 1, 2, 2]
    assert labelled == [False, False, False, True, True, True, True, True]
    assert len(km.queue) == 3 and km.queue_points() == 9  # the queue keeps queue_batches batches

    copy = OnlineKMeans(clusters=4, iters=5, queue_batches=3, seed=0)
    copy.load_state_dict(km.state_dict())
    for batch in batches[8:]:
        assert torch.equal(km.step(batch), copy.step(batch))
    assert torch.equal(km.centroids, copy.centroids)
    with pytest.raises(ValueError, match="clusters"):
        OnlineKMeans(clusters=5, iters=5, queue_batches=3, seed=0).load_state_dict(km.state_dict())
    with pytest.raises(ValueError, match="unit_centroids"):
        OnlineKMeans(clusters=4, iters=5, queue_batches=3, seed=0, unit_centroids=True).load_state_dict(km.state_dict())


def test_clustering_alone_can_step_before_its_first_fit_and_disabled_weights_may_be_absent():
    model = tiny_model(["tv"], reconstruction=False)
    losses = {"mms": {"enabled": False}, "clustering": {"enabled": True, "weight": 1.0},
              "reconstruction": {"enabled": False}}
    objective = objective_for(model, losses, clusters=100)
    total, terms = objective(model(tiny_batch()), step=1)
    assert list(terms) == ["clustering"] and total.item() == 0.0
    total.backward()                                    # attached to the graph, zero gradients
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    with pytest.raises(ValueError, match="every loss term is disabled"):
        objective_for(model, {name: {"enabled": False} for name in ("mms", "clustering", "reconstruction")})
