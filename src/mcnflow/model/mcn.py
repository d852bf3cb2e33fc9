"""The MCN network (Chen et al., ICCV 2021) with a modality-pair choice and a shared or per-pair space.

Branches (MCN's, as in the reference code):
  video: max-pooled, L2-normalised clip feature (made by training.clips) -> GEU(video_dim -> embd_dim)
  text:  word vectors -> Linear + ReLU -> max over the word slots, padding included as MCN (the text
         trunk) -> GEU(embd_dim -> embd_dim)
  audio: ResDAVEnet -> mean over time (the audio trunk) -> GEU(1024 -> 1024) -> Linear(1024 -> embd_dim)
         (1024 = the last of ``audio_widths``; smaller widths exist for tests and quick demos). As MCN,
         the mean covers every frame (zero padding too) in training mode and only the frames of real
         input in eval mode (``model.eval()``: evaluation).

``mask_text_padding`` / ``mask_audio_padding`` (off by default; ``training.departures``) leave the
padding out of the text max-pool (training and evaluation) and of the training-mode audio mean.

Only the modalities that appear in ``pairs`` are built. ``space="shared"`` has one head per modality
into one space (MCN). ``space="per_pair"`` gives every pair its own heads (the GEU / final projection
of each of its two modalities), so each pair has an independent space. The trunks (ResDAVEnet and the
text word projection) are shared by all spaces: the two settings then differ only in the heads, the
part that defines the space, and the trunks' cost is paid once.

Reconstruction decoders (MCN's ``recon_*``) map an embedding back to its own modality's trunk output:
video -> the input clip feature, audio -> the pooled ResDAVEnet output, text -> the sentence max-pool.
With per_pair spaces each (space, modality) embedding has its own decoder. As in MCN's code the audio
and text targets are live trunk outputs, so the reconstruction MSE trains the trunks too; the departure
``detach_reconstruction_targets`` (mcnflow.model.losses) stops that gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from mcnflow.model.davenet import DAVENET_WIDTHS, ResDAVEnet
from mcnflow.model.gated import GatedEmbeddingUnit, SentenceMaxPool

MODALITIES = ("video", "audio", "text")
PAIRS: dict[str, tuple[str, str]] = {"tv": ("text", "video"), "ta": ("text", "audio"), "va": ("video", "audio")}
SPACE_KINDS = ("shared", "per_pair", "fac")
SHARED = "shared"
# MMV's fine-and-coarse spaces (Alayrac et al., NeurIPS 2020): video and audio meet in the fine space;
# text meets them in the coarse space, which video and audio reach through one projection of their
# fine embeddings.
FINE, COARSE = "fine", "coarse"
FAC_SPACES = (FINE, COARSE)


def modalities_of(pairs: Iterable[str]) -> list[str]:
    """The modalities the pairs use, in MODALITIES order."""
    pairs = list(pairs)
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown or not pairs:
        raise ValueError(f"pairs {pairs!r}: need at least one of {', '.join(PAIRS)}")
    used = {m for p in pairs for m in PAIRS[p]}
    return [m for m in MODALITIES if m in used]


class AudioHead(nn.Module):
    """GEU in the trunk's 1024 dimensions (MCN: 'for fp16 stability'), then a plain linear projection."""

    def __init__(self, in_dim: int, embd_dim: int):
        super().__init__()
        self.gated = GatedEmbeddingUnit(in_dim, in_dim)
        self.projection = nn.Linear(in_dim, embd_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.gated(x))


def reconstruction_decoder(embd_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    # MCN's decoders end in a ReLU: every target (clip feature, pooled trunk outputs) is >= 0.
    return nn.Sequential(nn.Linear(embd_dim, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim), nn.ReLU(inplace=True))


@dataclass
class MCNOutput:
    trunk: dict[str, torch.Tensor]                                   # modality -> reconstruction target
    embeddings: dict[str, dict[str, torch.Tensor]]                   # space -> modality -> (N, embd_dim)
    reconstructions: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


class MCN(nn.Module):
    def __init__(self, pairs: Iterable[str], space: str = SHARED, *, embd_dim: int, video_dim: int,
                 word_dim: int, recon_size: int, reconstruction: bool = True, n_mels: int = 40,
                 audio_widths: Iterable[int] = DAVENET_WIDTHS, mask_text_padding: bool = False,
                 mask_audio_padding: bool = False, va_space: str = FINE):
        super().__init__()
        if space not in SPACE_KINDS:
            raise ValueError(f"space {space!r}; allowed: {', '.join(SPACE_KINDS)}")
        if va_space not in FAC_SPACES:
            raise ValueError(f"va_space {va_space!r}; allowed: {', '.join(FAC_SPACES)}")
        self.pairs = list(pairs)
        self.modalities = modalities_of(self.pairs)
        self.space = space
        self.va_space = va_space
        if space == SHARED:
            self.spaces = [SHARED]
        elif space == "fac":
            # the fine space exists for video and audio; the coarse one as soon as text is trained
            self.spaces = [s for s in FAC_SPACES if self._fac_modalities(s)]
        else:
            self.spaces = list(self.pairs)
        self.embd_dim = embd_dim
        self.config = {"pairs": self.pairs, "space": space, "embd_dim": embd_dim, "video_dim": video_dim,
                       "word_dim": word_dim, "recon_size": recon_size, "reconstruction": reconstruction,
                       "n_mels": n_mels, "audio_widths": list(audio_widths),
                       "mask_text_padding": bool(mask_text_padding), "mask_audio_padding": bool(mask_audio_padding),
                       "va_space": va_space}
        self.mask_audio_padding = bool(mask_audio_padding)

        if "audio" in self.modalities:
            self.davenet = ResDAVEnet(n_mels=n_mels, widths=tuple(audio_widths))
        if "text" in self.modalities:
            self.text_pool = SentenceMaxPool(word_dim, embd_dim, mask_padding=bool(mask_text_padding))
        trunk_dims = {"video": video_dim, "text": embd_dim}
        if "audio" in self.modalities:
            trunk_dims["audio"] = self.davenet.out_dim

        def head(modality: str) -> nn.Module:
            if modality == "video":
                return GatedEmbeddingUnit(video_dim, embd_dim)
            if modality == "text":
                return GatedEmbeddingUnit(embd_dim, embd_dim)
            return AudioHead(trunk_dims["audio"], embd_dim)

        if space == "fac":
            # fine: video and audio heads; coarse: the text head and one fine -> coarse projection
            # shared by video and audio (MMV's g_va->vat)
            self.heads = nn.ModuleDict({
                FINE: nn.ModuleDict({m: head(m) for m in self.modalities if m != "text"}),
                COARSE: nn.ModuleDict({"text": head("text")} if "text" in self.modalities else {})})
            if "text" in self.modalities and set(self.modalities) - {"text"}:
                self.fine_to_coarse = nn.Linear(embd_dim, embd_dim)
        else:
            self.heads = nn.ModuleDict({
                s: nn.ModuleDict({m: head(m) for m in self.space_modalities(s)}) for s in self.spaces})
        self.decoders: nn.ModuleDict | None = None
        if reconstruction:
            self.decoders = nn.ModuleDict({
                s: nn.ModuleDict({m: reconstruction_decoder(embd_dim, recon_size, trunk_dims[m])
                                  for m in self.space_modalities(s)})
                for s in self.spaces})

    # --- structure ---------------------------------------------------------------------------
    def _fac_modalities(self, space: str) -> list[str]:
        if space == FINE:
            return [m for m in self.modalities if m != "text"]
        return list(self.modalities) if "text" in self.modalities else []

    def space_modalities(self, space: str) -> list[str]:
        """The modalities embedded in ``space``: all of them (shared), the pair's two (per_pair), or
        with fac: video and audio (fine), text with the projected video and audio (coarse)."""
        if space == SHARED and self.space == SHARED:
            return list(self.modalities)
        if self.space == "fac" and space in self.spaces:
            return self._fac_modalities(space)
        if self.space == "per_pair" and space in self.pairs:
            return [m for m in MODALITIES if m in PAIRS[space]]
        raise KeyError(f"no space {space!r} in this model; spaces: {', '.join(self.spaces)}")

    def space_of(self, pair: str) -> str:
        """The space in which ``pair``'s MMS loss is computed."""
        if pair not in self.pairs:
            raise KeyError(f"pair {pair!r} is not trained by this model (pairs: {', '.join(self.pairs)})")
        if self.space == "fac":
            return COARSE if "t" in pair else self.va_space
        return SHARED if self.space == SHARED else pair

    def _resolve_space(self, space: str | None) -> str:
        if space is None:
            if self.space != SHARED:
                raise ValueError(f"this {self.space} model needs a space: one of {', '.join(self.spaces)}")
            return SHARED
        if space not in self.spaces:
            raise ValueError(f"space {space!r} is not in this model; spaces: {', '.join(self.spaces)}")
        return space

    # --- computation -------------------------------------------------------------------------
    def encode(self, modality: str, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The modality's trunk output (shared by all spaces); also the reconstruction target."""
        if modality not in self.modalities:
            raise ValueError(f"modality {modality!r} is not in this model (modalities: {', '.join(self.modalities)})")
        if modality == "video":
            return batch["video"].float()
        if modality == "audio":
            features = self.davenet(batch["audio"].float())
            if self.training and not self.mask_audio_padding:
                return self.davenet.pool_all(features)      # MCN's training pooling (padding included)
            return self.davenet.pool(features, batch["nframes"])
        return self.text_pool(batch["words"].float(), batch["mask"])

    def project(self, modality: str, trunk: torch.Tensor, space: str) -> torch.Tensor:
        if self.space == "fac" and space == COARSE and modality != "text":
            return self.fine_to_coarse(self.heads[FINE][modality](trunk))
        return self.heads[space][modality](trunk)

    def embed(self, modality: str, batch: Mapping[str, torch.Tensor], space: str | None = None) -> torch.Tensor:
        """(B, embd_dim) embeddings of one modality's batch (the dict training.clips makes) in ``space``.

        ``space`` is None for a shared model, or a pair name ("tv", "ta", "va") for a per_pair one.
        """
        space = self._resolve_space(space)
        if modality not in self.modalities:
            raise ValueError(f"modality {modality!r} is not in this model (modalities: {', '.join(self.modalities)})")
        if modality not in self.space_modalities(space):
            raise ValueError(f"modality {modality!r} has no embedding in space {space!r}")
        return self.project(modality, self.encode(modality, batch), space)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> MCNOutput:
        trunk = {m: self.encode(m, batch) for m in self.modalities}
        if self.space == "fac":
            fine = {m: self.heads[FINE][m](trunk[m]) for m in self._fac_modalities(FINE)}
            embeddings = {FINE: fine} if FINE in self.spaces else {}
            if COARSE in self.spaces:
                embeddings[COARSE] = {m: (self.heads[COARSE]["text"](trunk[m]) if m == "text"
                                          else self.fine_to_coarse(fine[m])) for m in self._fac_modalities(COARSE)}
        else:
            embeddings = {s: {m: self.project(m, trunk[m], s) for m in self.space_modalities(s)}
                          for s in self.spaces}
        reconstructions: dict[str, dict[str, torch.Tensor]] = {}
        if self.decoders is not None:
            reconstructions = {s: {m: self.decoders[s][m](e) for m, e in per_mod.items()}
                               for s, per_mod in embeddings.items()}
        return MCNOutput(trunk=trunk, embeddings=embeddings, reconstructions=reconstructions)


# Model files written before the padding switches existed were trained with padding masked.
LEGACY_MODEL_DEFAULTS = {"mask_text_padding": True, "mask_audio_padding": True}


def build_model(model_config: Mapping[str, Any]) -> MCN:
    """An MCN from the ``meta["model"]`` dict that training stores (MCN.config)."""
    config = {**LEGACY_MODEL_DEFAULTS, **model_config}
    return MCN(config.pop("pairs"), config.pop("space"), **config)


def load_model(checkpoint_path: str | Path, map_location: str | torch.device = "cpu") -> tuple[MCN, dict]:
    """Load ``model.pt`` (or an epoch checkpoint) -> (model in eval mode, meta).

    meta holds the experiment settings (pairs, space, losses, training), the model's constructor
    arguments (``model``) and the word2vec source the text branch was trained with (``word2vec``).
    """
    # weights_only: model files and checkpoints hold tensors and plain values only, no pickled code.
    payload = torch.load(checkpoint_path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or "model" not in payload or "meta" not in payload:
        raise ValueError(f"{checkpoint_path}: not an mcnflow model file (no 'model' and 'meta')")
    meta = payload["meta"]
    model = build_model(meta["model"])
    model.load_state_dict(payload["model"])
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    return model, meta
