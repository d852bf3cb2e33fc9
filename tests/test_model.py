"""The MCN network: branches per pair selection, shared vs per-pair spaces, gradients, save/load."""

from __future__ import annotations

import itertools

import pytest
import torch

from mcnflow.model import MCN, load_model
from mcnflow.model.davenet import ResDAVEnet
from mcnflow.model.gated import GatedEmbeddingUnit
from mcnflow.model.losses import MCNObjective

@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs with one torch thread (see conftest.one_torch_thread)."""


ALL_PAIRS = [list(c) for n in (1, 2, 3) for c in itertools.combinations(["tv", "ta", "va"], n)]
LOSSES = {"mms": {"enabled": True, "weight": 1.0}, "clustering": {"enabled": True, "weight": 1.0},
          "reconstruction": {"enabled": True, "weight": 50.0}}


def tiny_model(pairs, space="shared"):
    torch.manual_seed(0)
    return MCN(pairs, space, embd_dim=8, video_dim=6, word_dim=4, recon_size=16, n_mels=4,
               audio_widths=[4, 4, 4, 4, 8])


def tiny_batch(clips=8, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {"video": torch.rand(clips, 6, generator=generator),
            "audio": torch.randn(clips, 4, 48, generator=generator).half(),
            "nframes": torch.tensor([48, 40, 33, 20, 16, 48, 5, 30])[:clips],
            "words": torch.randn(clips, 3, 4, generator=generator),
            "mask": torch.tensor([[1, 1, 0]] * clips, dtype=torch.bool)}


def test_gated_embedding_unit_is_linear_then_context_gating_without_normalisation():
    torch.manual_seed(0)
    unit = GatedEmbeddingUnit(3, 4)
    x = torch.randn(5, 3)
    y = unit.fc(x)
    expected = y * torch.sigmoid(unit.gating.fc(y))
    assert torch.allclose(unit(x), expected, atol=1e-6)
    assert not torch.allclose(unit(x).norm(dim=1), torch.ones(5))


def test_davenet_strides_time_by_16_and_pools_only_valid_frames():
    net = ResDAVEnet(n_mels=4, widths=(4, 4, 4, 4, 8))
    assert net(torch.randn(2, 4, 100)).shape == (2, 8, 7)        # ceil(100 / 16)
    full = ResDAVEnet(n_mels=40)
    assert [stage[0].conv2.out_channels for stage in full.stages] == [128, 256, 512, 1024]
    assert all(len(stage) == 2 and stage[0].conv1.stride == (1, 2) for stage in full.stages)
    features = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    pooled = net.pool(features, torch.tensor([35, 7]))            # 35 // 16 = 2 frames; 7 frames -> at least 1
    assert torch.equal(pooled[0], features[0, :, :2].mean(dim=1))
    assert torch.equal(pooled[1], features[1, :, 0])


def test_text_max_pool_ignores_padded_words_with_mask_text_padding():
    torch.manual_seed(0)
    model = MCN(["tv"], embd_dim=8, video_dim=6, word_dim=4, recon_size=16, mask_text_padding=True).eval()
    batch = tiny_batch()
    padded = dict(batch, words=batch["words"].clone())
    padded["words"][:, 2] = 100.0                                   # masked out: must not matter
    assert torch.equal(model.embed("text", batch), model.embed("text", padded))
    # MCN's default counts the padded slot (tests/test_fidelity_model.py has its relu(bias) floor).
    default = tiny_model(["tv"]).eval()
    assert not torch.equal(default.embed("text", batch), default.embed("text", padded))


@pytest.mark.parametrize("pairs", ALL_PAIRS, ids=lambda p: "_".join(p))
@pytest.mark.parametrize("space", ["shared", "per_pair"])
def test_gradients_reach_exactly_the_branches_of_the_pairs(pairs, space):
    model = tiny_model(pairs, space)
    modalities = {"t": "text", "v": "video", "a": "audio"}
    used = sorted(modalities[c] for c in set("".join(pairs)))
    assert sorted(model.modalities) == used
    assert hasattr(model, "davenet") == ("audio" in used) and hasattr(model, "text_pool") == ("text" in used)
    expected_spaces = ["shared"] if space == "shared" else pairs
    assert model.spaces == expected_spaces
    for s in expected_spaces:
        assert sorted(model.heads[s]) == sorted(model.space_modalities(s))
        assert sorted(model.decoders[s]) == sorted(model.space_modalities(s))

    objective = MCNObjective(model, LOSSES, margin=0.001, clusters=2, kmeans_iters=5, queue_batches=1, seed=0)
    total, terms = objective(model(tiny_batch()), step=1)
    assert sorted(terms) == sorted([f"mms_{p}" for p in pairs] + ["clustering", "reconstruction"])
    assert terms["clustering"].item() > 0
    total.backward()
    no_gradient = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_gradient == []


def test_per_pair_spaces_are_independent():
    model = tiny_model(["tv", "ta", "va"], "per_pair")
    batch = tiny_batch()
    tv_text, tv_video = model.embed("text", batch, "tv"), model.embed("video", batch, "tv")
    with torch.no_grad():
        for p in itertools.chain(model.heads["ta"].parameters(), model.heads["va"].parameters()):
            p.add_(1.0)
    assert torch.equal(model.embed("text", batch, "tv"), tv_text)
    assert torch.equal(model.embed("video", batch, "tv"), tv_video)
    assert not torch.equal(model.embed("text", batch, "ta"), tv_text)

    # The tv MMS term moves the tv heads (and the shared text trunk), never another pair's heads.
    model.zero_grad()
    objective = MCNObjective(model, {**LOSSES, "clustering": {"enabled": False, "weight": 1.0},
                                     "reconstruction": {"enabled": False, "weight": 50.0}},
                             margin=0.001, clusters=2, kmeans_iters=5, queue_batches=1, seed=0)
    _, terms = objective(model(batch), step=1)
    terms["mms_tv"].backward()
    for space in ("ta", "va"):
        assert all(p.grad is None or not p.grad.any() for p in model.heads[space].parameters())
    assert all(p.grad is not None and p.grad.any() for p in model.heads["tv"].parameters())
    assert all(p.grad is None or not p.grad.any() for p in model.davenet.parameters())
    assert model.text_pool.fc.weight.grad.any()


def test_shared_space_has_one_head_per_modality_and_embed_checks_its_arguments():
    model = tiny_model(["tv", "va"])
    batch = tiny_batch()
    for modality in ("video", "audio", "text"):
        assert model.embed(modality, batch).shape == (8, 8)
        assert torch.equal(model.embed(modality, batch, space="shared"), model.embed(modality, batch))
    with pytest.raises(ValueError, match="space"):
        model.embed("video", batch, space="tv")
    per_pair = tiny_model(["tv", "va"], "per_pair")
    with pytest.raises(ValueError, match="needs a space"):
        per_pair.embed("video", batch)
    with pytest.raises(ValueError, match="no embedding in space"):
        per_pair.embed("audio", batch, space="tv")
    with pytest.raises(ValueError, match="not in this model"):
        tiny_model(["tv"]).embed("audio", batch)


def test_load_model_round_trip(tmp_path):
    model = tiny_model(["tv", "ta"], "per_pair")
    meta = {"pairs": ["tv", "ta"], "space": "per_pair", "model": model.config, "vocabulary": {"words": 3}}
    torch.save({"model": model.state_dict(), "meta": meta}, tmp_path / "model.pt")
    loaded, loaded_meta = load_model(tmp_path / "model.pt")
    assert loaded_meta == meta and loaded.spaces == ["tv", "ta"] and not loaded.training
    model.eval()
    batch = tiny_batch()
    for space, modality in (("tv", "video"), ("tv", "text"), ("ta", "audio")):
        assert torch.equal(loaded.embed(modality, batch, space), model.embed(modality, batch, space))
    # A model file from before the padding switches was trained with padding masked: it loads so.
    legacy = {k: v for k, v in model.config.items() if k not in ("mask_text_padding", "mask_audio_padding")}
    torch.save({"model": model.state_dict(), "meta": {**meta, "model": legacy}}, tmp_path / "legacy.pt")
    old, _ = load_model(tmp_path / "legacy.pt")
    assert old.config["mask_text_padding"] and old.config["mask_audio_padding"] and old.text_pool.mask_padding
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an mcnflow model"):
        load_model(tmp_path / "other.pt")


# --- MMV's fine-and-coarse spaces (space: fac) ------------------------------------------------------------

def _fac(pairs=("tv", "ta", "va"), va_space="fine"):
    from mcnflow.model.mcn import MCN
    torch.manual_seed(0)
    return MCN(list(pairs), "fac", embd_dim=12, video_dim=6, word_dim=5, recon_size=8,
               audio_widths=(4, 4, 4, 4, 8), va_space=va_space)


def _fac_batch(n=3):
    torch.manual_seed(1)
    return {"video": torch.rand(n, 6), "audio": torch.randn(n, 40, 64), "nframes": torch.full((n,), 64),
            "words": torch.randn(n, 4, 5), "mask": torch.ones(n, 4, dtype=torch.bool)}


def test_fac_video_and_audio_meet_in_the_fine_space_and_text_in_the_coarse_one():
    model = _fac()
    assert model.spaces == ["fine", "coarse"]
    assert model.space_modalities("fine") == ["video", "audio"]
    assert model.space_modalities("coarse") == ["video", "audio", "text"]
    assert (model.space_of("va"), model.space_of("tv"), model.space_of("ta")) == ("fine", "coarse", "coarse")
    assert _fac(va_space="coarse").space_of("va") == "coarse"
    batch = _fac_batch()
    output = model(batch)
    fine, coarse = output.embeddings["fine"], output.embeddings["coarse"]
    # coarse video / audio = one projection of their fine embeddings (MMV's g_va->vat)
    torch.testing.assert_close(coarse["video"], model.fine_to_coarse(fine["video"]))
    torch.testing.assert_close(coarse["audio"], model.fine_to_coarse(fine["audio"]))
    model.eval()
    torch.testing.assert_close(model.embed("video", batch, space="coarse"),
                               model.fine_to_coarse(model.embed("video", batch, space="fine")))
    with pytest.raises(ValueError, match="no embedding in space 'fine'"):
        model.embed("text", batch, space="fine")
    # without text there is no coarse space
    assert _fac(pairs=("va",)).spaces == ["fine"]


def test_fac_text_to_video_scores_use_the_coarse_space():
    from mcnflow.evaluation.scoring import choose_scoring, embed_clips, embed_text, similarity
    model = _fac().eval()
    scoring = choose_scoring(["tv", "ta", "va"], "fac")
    assert scoring.label == "t.(v+a)[coarse]" and scoring.text_spaces == ("coarse",)
    assert choose_scoring(["tv", "va"], "fac").label == "t.v[coarse]"
    batch = _fac_batch()
    text = embed_text(model, scoring, batch)
    clips = embed_clips(model, scoring, {"video": batch, "audio": batch})
    scores = similarity(scoring, text, clips)
    with torch.no_grad():
        t = model.embed("text", batch, space="coarse")
        v = model.fine_to_coarse(model.embed("video", batch, space="fine"))
        a = model.fine_to_coarse(model.embed("audio", batch, space="fine"))
    torch.testing.assert_close(scores, t @ (v + a).T)


def test_fac_trains_every_pair_in_its_space():
    from mcnflow.model.losses import MCNObjective
    model = _fac()
    losses = {"mms": {"enabled": True, "weight": 1.0}, "clustering": {"enabled": False},
              "reconstruction": {"enabled": True, "weight": 50.0}}
    objective = MCNObjective(model, losses, margin=0.001, clusters=2, kmeans_iters=5, queue_batches=1, seed=0)
    total, terms = objective(model(_fac_batch()), 0)
    assert {"mms_tv", "mms_ta", "mms_va", "reconstruction"} <= set(terms)
    total.backward()
    assert model.fine_to_coarse.weight.grad is not None and model.fine_to_coarse.weight.grad.abs().sum() > 0
