"""MCN as published, on fixed tensors: k-means, its queue and reset, reconstruction targets, padding.

The references (brian7685/Multimodal-Clustering-Network @808948b, DeMoriarty/fast_pytorch_kmeans
@4f610fb) are cited per test; docs/fidelity.md maps every row of its tables to one of these tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from mcnflow.core.config import ConfigError, deep_merge, load_config, load_schema
from mcnflow.core.frozen import freeze
from mcnflow.core.plan import Plan
from mcnflow.model import MCN
from mcnflow.model.davenet import ResDAVEnet
from mcnflow.model.gated import SentenceMaxPool
from mcnflow.model.kmeans import OnlineKMeans, assign, cosine_kmeans
from mcnflow.model.losses import MCNObjective, cluster_loss
from mcnflow.model.mcn import MCNOutput
from mcnflow.training.trainer import DEPARTURES, build_objective, check_departures, check_settings, queue_clips

REPO = Path(__file__).resolve().parents[1]
RECONSTRUCTION_ONLY = {"mms": {"enabled": False}, "clustering": {"enabled": False},
                       "reconstruction": {"enabled": True, "weight": 50.0}}
ALL_TERMS = {"mms": {"enabled": True, "weight": 1.0}, "clustering": {"enabled": True, "weight": 1.0},
             "reconstruction": {"enabled": True, "weight": 50.0}}


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see conftest.one_torch_thread)."""


def tiny_model(pairs=("tv", "ta", "va"), **switches):
    torch.manual_seed(0)
    return MCN(list(pairs), embd_dim=8, video_dim=6, word_dim=4, recon_size=5, n_mels=4,
               audio_widths=[4, 4, 4, 4, 8], **switches)


def tiny_batch(clips=8):
    generator = torch.Generator().manual_seed(1)
    mask = torch.zeros(clips, 3, dtype=torch.bool)
    mask[:, 0] = True
    words = torch.randn(clips, 3, 4, generator=generator) * mask.unsqueeze(-1)   # padding slots are zero vectors
    return {"video": torch.rand(clips, 6, generator=generator),
            "audio": torch.randn(clips, 4, 64, generator=generator),
            "nframes": torch.tensor([64, 40, 33, 20, 16, 64, 5, 30])[:clips],
            "words": words, "mask": mask}


# --- k-means (fast_pytorch_kmeans kmeans.py:52-66, 140-233) ------------------------------------

POINTS = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
INIT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])   # the third gets no point


def test_centroids_are_raw_means_and_an_empty_cluster_becomes_zero():
    centroids, labels = cosine_kmeans(POINTS, INIT, iters=1)
    assert labels.tolist() == [0, 0, 1, 1]
    # FPK :181-182: the plain mean of the raw points (their norms count); an empty cluster -> 0.
    assert torch.equal(centroids, torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    # The departures: unit means of unit points; an empty cluster keeping its (raw / unit) centroid.
    unit, _ = cosine_kmeans(POINTS, INIT, iters=1, unit_centroids=True)
    assert torch.allclose(unit[:2], torch.eye(2)) and torch.equal(unit[2], torch.zeros(2))
    kept, _ = cosine_kmeans(POINTS, INIT, iters=1, keep_empty_clusters=True)
    assert torch.equal(kept[2], INIT[2])
    both, _ = cosine_kmeans(POINTS, INIT, iters=1, unit_centroids=True, keep_empty_clusters=True)
    assert torch.allclose(both[2], INIT[2] / INIT[2].norm(), atol=1e-6)


def test_raw_centroids_set_the_cluster_loss_scale():
    # MCN's cluster logits are embedding . centroid: with raw-mean centroids they grow with the points.
    embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    raw, _ = cosine_kmeans(POINTS, INIT[:2], iters=5)
    unit, _ = cosine_kmeans(POINTS, INIT[:2], iters=5, unit_centroids=True)
    scaled, _ = cosine_kmeans(10 * POINTS, INIT[:2], iters=5)
    assert torch.equal(scaled, 10 * raw)
    assert cluster_loss(embedding, scaled, labels, 0.001) < cluster_loss(embedding, raw, labels, 0.001) \
        < cluster_loss(embedding, unit, labels, 0.001)


def test_assignment_is_by_cosine_and_a_zero_centroid_scores_zero():
    centroids = torch.tensor([[10.0, 0.0], [1.0, 1.0]])
    point = torch.tensor([[1.0, 0.1]])
    assert (point - centroids).norm(dim=1).argmin().item() == 1   # Euclidean would pick the near one ...
    assert assign(point, centroids).item() == 0                   # ... cosine picks the same direction
    # FPK cos_sim divides by |c| + 1e-8: a zero centroid has similarity 0, above any negative cosine.
    assert assign(torch.tensor([[-1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])).item() == 1


def test_kmeans_stops_when_centroids_stop_moving_and_returns_the_last_assignment():
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.randn(20, 3, generator=generator) + 4, torch.randn(20, 3, generator=generator) - 4])
    centroids, labels = cosine_kmeans(points, points[[0, 20]], iters=100)
    assert torch.equal(labels, assign(points, centroids))
    assert torch.allclose(centroids, torch.stack([points[labels == k].mean(dim=0) for k in range(2)]))


def test_queue_takes_the_first_16_of_each_videos_32_clips():
    # train_tri_kmeans.py:238-240: fuse.view(-1, 32, D)[:, :16]; the trainer passes n_pair and n_pair // 2.
    assert queue_clips(32) == 16
    km = OnlineKMeans(clusters=2, iters=5, queue_batches=20, seed=0, clips_per_video=32, queue_clips=16)
    rows = torch.arange(3 * 32, dtype=torch.float32)
    fused = torch.stack([rows, torch.ones_like(rows)], dim=1)      # row i of video i // 32, clip i % 32
    km.step(fused)
    assert km.queue[0][:, 0].tolist() == [float(i) for i in range(96) if i % 32 < 16]
    with pytest.raises(ValueError, match="whole videos"):
        km.step(fused[:40])
    with pytest.raises(ValueError, match="queue_clips"):
        OnlineKMeans(clusters=2, iters=5, queue_batches=2, seed=0, clips_per_video=4, queue_clips=5)


def test_kmeans_sees_one_batch_until_the_queue_is_full_then_queue_plus_the_whole_batch():
    # train:242-246: before the queue is full k-means clusters the batch alone; once full, the queue
    # (before this batch is pushed) plus all of the batch's clips. One video of 4 clips, 2 queued.
    km = OnlineKMeans(clusters=8, iters=5, queue_batches=2, seed=0, clips_per_video=4, queue_clips=2)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, generator=generator) for _ in range(3)]
    assert km.step(batches[0]) is None and km.step(batches[1]) is None   # 4 points < 8 clusters
    labels = km.step(batches[2])                                         # 2 + 2 queued + 4 = 8 points
    assert km.fits == 1 and labels.shape == (4,)
    assert km.queue_points() == 4 and torch.equal(km.queue[-1], batches[2][:2])


def test_refits_every_queue_batches_steps_of_an_epoch_and_the_centroids_reset_each_epoch():
    # train:347-352 fits when i_batch % queue_size == 0 (i_batch counts from each epoch's start),
    # warm-started from the current centroids; :470 sets centroid = None before every epoch.
    points = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, -4.0]])
    previous = torch.tensor([[1.0, 0.0], [1.0, 0.001], [1.0, 0.002], [1.0, 0.003]])
    # Warm-started from `previous`, one round puts [1,0] and [0,-4] in cluster 0, [0,2] and [-3,0] in 3.
    warm = torch.tensor([[0.5, -2.0], [0.0, 0.0], [0.0, 0.0], [-1.5, 1.0]])
    results = {}
    for keep in (False, True):
        km = OnlineKMeans(clusters=4, iters=1, queue_batches=3, seed=0, keep_centroids_across_epochs=keep)
        km.start_epoch()
        km.step(points)                                         # epoch 1, step 0: a (cold) fit
        km.step(points)                                         # step 1: assignment only
        assert km.fits == 1
        km.centroids = previous.clone()                         # where epoch 1 left its centroids
        km.start_epoch()
        assert (km.centroids is None) == (not keep)
        km.step(points)                                         # epoch 2, step 0: the epoch's first fit
        assert km.fits == 2
        results[keep] = km.centroids
    assert torch.equal(results[True], warm)
    # Reset: a cold start from 4 of the 4 points, each its own cluster: the points, in some order.
    assert sorted(map(tuple, results[False].tolist())) == sorted(map(tuple, points.tolist()))


def test_settings_reach_the_kmeans_and_every_departure_defaults_to_off():
    # The tv_ta_va branch as the workflow builds it from config.yaml, one switch set, read-only.
    branch = Plan(load_config([REPO / "config.yaml"])).experiment_settings("tv_ta_va", 1)
    settings = freeze(deep_merge(branch, {"training": {"departures": {"detach_reconstruction_targets": True}}}))
    checked = check_settings(settings)
    assert checked["training"]["departures"] == {**{key: False for key in DEPARTURES},
                                                 "detach_reconstruction_targets": True}
    assert settings["training"]["departures"] == {**{key: False for key in DEPARTURES},
                                                  "detach_reconstruction_targets": True}     # untouched
    objective = build_objective(tiny_model(), checked)
    km = objective.kmeans["shared"]
    assert (km.clips_per_video, km.queue_clips, km.queue_batches, km.iters) == (32, 16, 20, 100)
    assert not (km.unit_centroids or km.keep_empty_clusters or km.keep_centroids_across_epochs)
    assert objective.detach_targets
    assert check_departures(None) == {key: False for key in DEPARTURES}   # settings without the section: MCN
    with pytest.raises(ConfigError, match="unknown key.*'mask_video'.*allowed keys: unit_centroids"):
        check_departures({"mask_video": True})
    with pytest.raises(ConfigError, match="unit_centroids: 'yes' is not allowed; allowed values: true, false"):
        check_departures({"unit_centroids": "yes"})


def test_config_yaml_reproduces_mcn_and_the_schema_documents_each_switch():
    schema = load_schema()["properties"]["training"]["properties"]["departures"]
    assert sorted(schema["properties"]) == sorted(DEPARTURES)
    for key, spec in schema["properties"].items():
        assert spec["type"] == "boolean" and spec["default"] is False and spec["description"], key
    raw = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    assert raw["training"]["departures"] == {key: False for key in DEPARTURES}
    config = load_config([REPO / "config.yaml"])
    training = config["training"]
    # MCN's README command line (train_tri_kmeans.py --epochs=30 --batch_size=128 --n_pair=32
    # --embd_dim=6144 --min_time=10.0 --lr=0.0001 --queue_size=20 --recon_size=1024) and args.py defaults.
    mcn = {"epochs": 30, "batch_size": 128, "n_pair": 32, "embd_dim": 6144, "min_time": 10.0, "lr": 1e-4,
           "queue_batches": 20, "recon_size": 1024, "warmup_steps": 5000, "schedule": "warmup_cosine",
           "optimizer": "adam", "margin": 0.001, "clusters": 256, "kmeans_iters": 100, "max_words": 20,
           "audio_widths": [128, 128, 256, 512, 1024]}
    assert {key: training[key] for key in mcn} == mcn
    assert config["seeds"] == [1]
    for name, entry in config["experiments"].items():
        losses = entry["losses"]
        assert (losses["mms"]["weight"], losses["clustering"]["weight"], losses["reconstruction"]["weight"]) \
            == (1.0, 1.0, 50.0), name
        assert all(losses[term]["enabled"] for term in ("mms", "clustering", "reconstruction")), name
    # The demo may switch departures on; each one it sets carries a comment saying why.
    demo_lines = (REPO / "demo" / "config.yaml").read_text(encoding="utf-8").splitlines()
    demo = yaml.safe_load("\n".join(demo_lines))
    for key, value in (demo.get("training", {}).get("departures") or {}).items():
        line = next(line for line in demo_lines if line.strip().startswith(f"{key}:"))
        assert "#" in line and len(line.split("#", 1)[1].strip()) > 20, key
    with pytest.raises(ConfigError, match="training.departures"):
        load_config([REPO / "config.yaml"], {"training": {"departures": {"unit_centroid": True}}})


def test_heads_and_decoders_are_mcns():
    # model_kmeans_ICCV.py:32-37 (GEU per modality, the audio one in the trunk's 1024 dimensions, then
    # a linear projection), :70-87 (decoders Linear-ReLU-Linear-ReLU back to each trunk's output).
    model = MCN(["tv", "ta", "va"], embd_dim=16, video_dim=6, word_dim=4, recon_size=5, n_mels=4,
                audio_widths=[4, 4, 4, 4, 8])
    heads, decoders = model.heads["shared"], model.decoders["shared"]
    assert (heads["video"].fc.in_features, heads["video"].fc.out_features) == (6, 16)
    assert (heads["text"].fc.in_features, heads["text"].fc.out_features) == (16, 16)
    assert (model.text_pool.fc.in_features, model.text_pool.fc.out_features) == (4, 16)
    assert (heads["audio"].gated.fc.in_features, heads["audio"].gated.fc.out_features) == (8, 8)
    assert (heads["audio"].projection.in_features, heads["audio"].projection.out_features) == (8, 16)
    for modality, target in (("video", 6), ("audio", 8), ("text", 16)):
        layers = list(decoders[modality])
        assert [type(layer).__name__ for layer in layers] == ["Linear", "ReLU", "Linear", "ReLU"]
        assert (layers[0].in_features, layers[0].out_features, layers[2].out_features) == (16, 5, target)


# --- cluster loss (train_tri_kmeans.py:254-275, :372-375) ---------------------------------------

def test_tri_modal_cluster_loss_is_the_sum_over_modalities_divided_by_three():
    model = tiny_model()
    objective = MCNObjective(model, {**ALL_TERMS, "reconstruction": {"enabled": False}}, margin=0.001,
                             clusters=2, kmeans_iters=10, queue_batches=2, seed=0)
    batch = tiny_batch()
    objective(model(batch), step=1)                             # the epoch's step 0: a fit
    output = model(batch)
    _, terms = objective(output, step=2)                        # step 1: nearest centroid
    embeddings = output.embeddings["shared"]
    centroids = objective.kmeans["shared"].centroids
    labels = assign(sum(e.detach() for e in embeddings.values()) / 3, centroids)
    expected = sum(cluster_loss(e, centroids, labels, 0.001) for e in embeddings.values()) / 3
    assert terms["clustering"].item() == pytest.approx(expected.item(), rel=1e-5)


# --- reconstruction (model_kmeans_ICCV.py:131-141, 172-175) ---------------------------------------

def reconstruction_through_targets_only(model, objective, batch):
    """The reconstruction term with the decoders fed detached embeddings: only the targets still
    connect it to the trunks, so the trunks' gradient is exactly the target path's."""
    output = model(batch)
    cut = {s: {m: model.decoders[s][m](e.detach()) for m, e in per_mod.items()}
           for s, per_mod in output.embeddings.items()}
    _, terms = objective(MCNOutput(trunk=output.trunk, embeddings=output.embeddings, reconstructions=cut), step=1)
    terms["reconstruction"].backward()


@pytest.mark.parametrize("detach", [False, True])
def test_reconstruction_trains_the_audio_and_text_trunks_unless_detached(detach):
    model = tiny_model().train()
    objective = MCNObjective(model, RECONSTRUCTION_ONLY, margin=0.001, clusters=2, kmeans_iters=5,
                             queue_batches=1, seed=0, detach_targets=detach)
    reconstruction_through_targets_only(model, objective, tiny_batch())
    trunks = {"audio": list(model.davenet.parameters()), "text": list(model.text_pool.parameters())}
    for name, parameters in trunks.items():
        moved = any(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters)
        assert moved == (not detach), name
    for decoder in model.decoders["shared"].values():           # the term itself still trains the decoders
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())


# --- padding: text max-pool (model_kmeans_ICCV.py:223-231), audio mean (:109-122) ------------------

def test_padded_text_max_pool_is_at_least_relu_of_the_bias():
    pool = SentenceMaxPool(2, 3)
    with torch.no_grad():
        pool.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        pool.fc.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    words = torch.tensor([[[-3.0, 4.0], [0.0, 0.0], [0.0, 0.0]]])   # one real word, two padded (zero) slots
    mask = torch.tensor([[True, False, False]])
    # The real word alone: relu([-3 + .5, 4 - 1, -3 + 4 + 2]) = [0, 3, 3]; each padded slot: relu(b).
    assert pool(words, mask).tolist() == [[0.5, 3.0, 3.0]]          # MCN: the max includes relu(b)
    assert torch.all(pool(words, mask) >= torch.relu(pool.fc.bias))
    pool.mask_padding = True
    assert pool(words, mask).tolist() == [[0.0, 3.0, 3.0]]          # mask_text_padding: real words only
    assert tiny_model(mask_text_padding=True).text_pool.mask_padding
    assert not tiny_model().text_pool.mask_padding


def test_training_audio_mean_covers_the_padding_and_evaluation_only_real_frames():
    features = torch.tensor([[[1.0, 2.0, 3.0, 6.0]]])                # (1 clip, 1 channel, 4 output frames)
    assert ResDAVEnet.pool_all(features).item() == 3.0               # MCN training: audio.mean(dim=2)
    net = ResDAVEnet(n_mels=4, widths=(4, 4, 4, 4, 8))
    assert net.pool(features, torch.tensor([32])).item() == 1.5      # eval: the first 32 // 16 frames

    batch = tiny_batch()
    for masked in (False, True):
        model = tiny_model(mask_audio_padding=masked)
        model.train()
        with torch.no_grad():
            features = model.davenet(batch["audio"])
            trained = model.encode("audio", batch)
        expected = net.pool(features, batch["nframes"]) if masked else features.mean(dim=-1)
        assert torch.allclose(trained, expected, atol=1e-6)
        assert not torch.allclose(trained, features.mean(dim=-1) if masked else net.pool(features, batch["nframes"]))
        model.eval()
        with torch.no_grad():
            assert torch.allclose(model.encode("audio", batch), net.pool(model.davenet(batch["audio"]), batch["nframes"]))
