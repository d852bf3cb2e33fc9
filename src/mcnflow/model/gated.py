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
    """Word vectors -> Linear + ReLU -> max over the words of each caption (padding masked out)."""

    def __init__(self, word_dim: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(word_dim, out_dim)

    def forward(self, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``words`` (B, W, word_dim), ``mask`` (B, W) true for real words -> (B, out_dim).

        After the ReLU every value is >= 0, so filling padded positions with 0 leaves the max over
        the real words unchanged; a caption without words embeds as zeros.
        """
        hidden = F.relu(self.fc(words))
        hidden = hidden.masked_fill(~mask.bool().unsqueeze(-1), 0.0)
        return hidden.amax(dim=1)
