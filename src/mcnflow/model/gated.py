"""Gated embedding units (Miech et al.), as MCN uses them: no L2 normalisation at the end.

MCN's similarities are raw dot products, so the embedding norm is left free (HowTo100M's GEU
ends with ``F.normalize``; MCN's does not).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ContextGating(nn.Module):
    """``y * sigmoid(W y + b)``: each dimension gated by a function of the whole vector."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(torch.cat((x, self.fc(x)), dim=-1), dim=-1)


class GatedEmbeddingUnit(nn.Module):
    """Linear projection followed by context gating."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.gating = ContextGating(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gating(self.fc(x))


class SentenceMaxPool(nn.Module):
    """Word vectors -> Linear + ReLU -> max over the word slots of each caption.

    MCN (model_kmeans_ICCV.py:223-231) takes the max over all ``max_words`` slots, padding included:
    a padded slot holds a zero word vector, so it contributes ``relu(bias)`` and every output is at
    least ``relu(bias)``. ``mask_padding=True`` (the departure ``mask_text_padding``) leaves the padded
    slots out, so a caption embeds from its real words only (and one without words as zeros).
    """

    def __init__(self, word_dim: int, out_dim: int, mask_padding: bool = False):
        super().__init__()
        self.fc = nn.Linear(word_dim, out_dim)
        self.mask_padding = mask_padding

    def forward(self, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``words`` (B, W, word_dim), ``mask`` (B, W) true for real words -> (B, out_dim)."""
        hidden = F.relu(self.fc(words))
        if self.mask_padding:
            # After the ReLU every value is >= 0, so a 0 in the padded slots is never above a real word's.
            hidden = hidden.masked_fill(~mask.bool().unsqueeze(-1), 0.0)
        return hidden.amax(dim=1)
