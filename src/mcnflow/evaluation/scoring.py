"""Which similarity scores a text query against a clip, for each experiment.

The rule follows what the experiment trained (its ``pairs``) so no untrained branch is ever used:

- ``tv`` and ``ta`` trained: ``t . (v + a)``, MCN's zero-shot score (unnormalised embeddings,
  ``train_tri_kmeans.py``), written as the sum ``t.v + t.a``, which is the same number;
- only ``tv``: ``t . v``;  only ``ta``: ``t . a``;
- neither (``va`` only): the text branch was never trained, so the benchmark is not scored; the
  result carries empty metrics and the note ``text branch not trained``.

With ``space: per_pair`` each pair has its own projection heads: ``t.v`` is computed in the ``tv``
space and ``t.a`` in the ``ta`` space, and the per-space similarities are summed.

With ``space: fac`` (MMV's fine and coarse spaces) text lives in the coarse space only, so every term
is computed there: the text's coarse embedding against the clip's video (and audio) embedding
projected from the fine space into the coarse one (``t.v[coarse]``, ``t.(v+a)[coarse]``). The fine
space, where video meets audio, never scores text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

# text-involving pairs and the clip modality each scores the text against, in scoring order
TEXT_PAIRS = (("tv", "video"), ("ta", "audio"))
SPACES = ("shared", "per_pair", "fac")
COARSE = "coarse"  # the fac space text is embedded in
NOT_TRAINED_NOTE = "text branch not trained"
SHORT = {"video": "v", "audio": "a"}


@dataclass(frozen=True)
class ScoreTerm:
    """``text . <modality>`` computed in ``space`` (None: the shared space)."""

    pair: str
    modality: str
    space: str | None


@dataclass(frozen=True)
class Scoring:
    terms: tuple[ScoreTerm, ...]
    space: str

    @property
    def scored(self) -> bool:
        return bool(self.terms)

    @property
    def clip_modalities(self) -> tuple[str, ...]:
        """The clip modalities a query needs (a clip missing one of them is a failed query)."""
        return tuple(term.modality for term in self.terms)

    @property
    def text_spaces(self) -> tuple[str | None, ...]:
        """Spaces the text is embedded in (one for shared, one per pair for per_pair)."""
        return tuple(dict.fromkeys(term.space for term in self.terms))

    @property
    def label(self) -> str:
        """How the score reads in the results: ``t.v``, ``t.a``, ``t.(v+a)``, ``t.v[tv]+t.a[ta]``."""
        if not self.terms:
            return "none"
        if self.space == "per_pair":
            return "+".join(f"t.{SHORT[t.modality]}[{t.space}]" for t in self.terms)
        if self.space == "fac":
            inner = (SHORT[self.terms[0].modality] if len(self.terms) == 1
                     else "(" + "+".join(SHORT[t.modality] for t in self.terms) + ")")
            return f"t.{inner}[{COARSE}]"
        if len(self.terms) == 1:
            return f"t.{SHORT[self.terms[0].modality]}"
        return "t.(" + "+".join(SHORT[t.modality] for t in self.terms) + ")"

    @property
    def note(self) -> str:
        return "" if self.terms else NOT_TRAINED_NOTE


def choose_scoring(pairs: Sequence[str], space: str) -> Scoring:
    """The scoring an experiment with ``pairs`` trained in ``space`` is evaluated with."""
    if space not in SPACES:
        raise ValueError(f"space {space!r}; allowed values: {', '.join(SPACES)}")
    unknown = set(pairs) - {"tv", "ta", "va"}
    if unknown:
        raise ValueError(f"unknown pair(s) {sorted(unknown)}; allowed values: tv, ta, va")
    spaces = {"shared": lambda pair: None, "per_pair": lambda pair: pair, "fac": lambda pair: COARSE}[space]
    terms = tuple(ScoreTerm(pair, modality, spaces(pair)) for pair, modality in TEXT_PAIRS if pair in pairs)
    return Scoring(terms, space)


def check_model(model: Any, scoring: Scoring) -> None:
    """Fail early, naming what is missing, when the checkpoint cannot give the needed embeddings."""
    modalities = set(getattr(model, "modalities", ()))
    needed = {"text", *scoring.clip_modalities}
    if not needed <= modalities:
        raise ValueError(f"the model has branches {sorted(modalities)}; scoring {scoring.label} needs "
                         f"{sorted(needed)}")
    spaces = set(getattr(model, "spaces", ()))
    wanted = {s for s in scoring.text_spaces if s is not None}
    if not wanted <= spaces:
        raise ValueError(f"the model has spaces {sorted(spaces)}; scoring {scoring.label} needs {sorted(wanted)}")


@torch.no_grad()
def embed_text(model: Any, scoring: Scoring, text_batch: Mapping[str, Any]) -> dict[str | None, torch.Tensor]:
    """Text embeddings (B, D) in every space the scoring uses."""
    return {space: model.embed("text", text_batch, space=space).float() for space in scoring.text_spaces}


@torch.no_grad()
def embed_clips(model: Any, scoring: Scoring,
                clip_batches: Mapping[str, Mapping[str, Any]]) -> dict[ScoreTerm, torch.Tensor]:
    """Clip embeddings (B, D) per term; ``clip_batches`` maps modality -> that modality's batch."""
    return {term: model.embed(term.modality, clip_batches[term.modality], space=term.space).float()
            for term in scoring.terms}


def similarity(scoring: Scoring, text: Mapping[str | None, torch.Tensor],
               clips: Mapping[ScoreTerm, torch.Tensor]) -> torch.Tensor:
    """(queries, clips) score matrix: the sum over terms of text . clip in the term's space."""
    if not scoring.scored:
        raise ValueError(f"nothing to score: {NOT_TRAINED_NOTE}")
    total = None
    for term in scoring.terms:
        part = text[term.space] @ clips[term].T
        total = part if total is None else total + part
    return total
