"""Corpus readers: the real file formats of HowTo100M, YouCook2, MSR-VTT, CrossTask and Mining YouTube
behind one interface.

``open_corpus(name, spec)`` returns a :class:`~mcnflow.corpora.base.Corpus` whose
``video_ids()`` (validated, de-duplicated, in file order), ``source(video_id)`` (a URL or a local
path), ``captions(video_id)`` and ``segments()`` (evaluation queries) every stage uses.
"""

from __future__ import annotations

from mcnflow.corpora.base import Caption, Corpus, CorpusError, Segment
from mcnflow.corpora.crosstask import CrossTask
from mcnflow.corpora.howto100m import HowTo100M
from mcnflow.corpora.mining_youtube import MiningYouTube
from mcnflow.corpora.msrvtt import MSRVTT
from mcnflow.corpora.youcook2 import YouCook2

READERS: dict[str, type[Corpus]] = {"howto100m": HowTo100M, "youcook2": YouCook2, "msrvtt": MSRVTT,
                                    "crosstask": CrossTask, "mining_youtube": MiningYouTube}


def open_corpus(name: str, spec: dict, base_dir: str = ".") -> Corpus:
    """The reader named by ``spec['reader']`` for corpus ``name`` (paths relative to ``base_dir``)."""
    try:
        reader = READERS[spec["reader"]]
    except KeyError:
        raise CorpusError(f"corpora.{name}.reader: {spec.get('reader')!r} is not allowed; "
                          f"allowed values: {', '.join(READERS)}") from None
    return reader(name, spec, base_dir)


__all__ = ["Caption", "Corpus", "CorpusError", "Segment", "open_corpus", "READERS"]
