"""Captions as MCN's text branch sees them: tokenized words, with YouTube's rolling repeats removed.

* :func:`tokenize` is MCN's (antoine77340/howto100m ``_tokenize_text``): ``re.findall(r"[\\w']+")``,
  case kept, words outside the word2vec vocabulary dropped, the first ``max_words`` kept.
* :func:`dedup_rolling` de-duplicates ``raw_caption.json`` ASR lines, where YouTube's rolling display
  repeats the end of one line at the start of the next (VideoCLIP's ``CaptionDedupProcessor`` does the
  same job character by character and at random; here it is word by word and deterministic).
* :func:`parse_vtt` reads yt-dlp's WebVTT auto-captions, whose every cue repeats the previous line.
* :class:`CaptionSource` picks the right one for a corpus (``caption_format``) and is what the
  word2vec and text extractors share.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Container, Iterable, Mapping

from mcnflow.corpora.base import Caption
from mcnflow.core.plan import splits_captions

WORD = re.compile(r"[\w']+")
# "00:01:02.345" or "01:02.345" (hours optional in WebVTT), cue settings may follow the end time.
VTT_TIME = r"(?:(\d+):)?(\d{2}):(\d{2})[.,](\d{3})"
VTT_TIMING = re.compile(rf"^\s*{VTT_TIME}\s+-->\s+{VTT_TIME}")
VTT_TAG = re.compile(r"<[^>]*>")


class CaptionFileError(ValueError):
    """A caption file named by a ledger is missing or unreadable."""


def words_of(text: str) -> list[str]:
    """MCN's word split: runs of word characters and apostrophes ("don't" stays one word)."""
    return WORD.findall(str(text))


def tokenize(text: str, vocabulary: Container[str], max_words: int | None) -> list[str]:
    """In-vocabulary words of ``text`` in order, case kept, at most ``max_words`` (None: all)."""
    kept = [word for word in words_of(text) if word in vocabulary]
    return kept if max_words is None else kept[:max_words]


# --- rolling ASR lines (raw_caption.json) -------------------------------------------------------

def as_captions(captions: Any) -> list[Caption]:
    """Captions from a ``{"start": [], "end": [], "text": []}`` dict, (start, end, text) triples or Caption objects."""
    if isinstance(captions, Mapping):
        starts, ends, texts = captions["start"], captions["end"], captions["text"]
        if not len(starts) == len(ends) == len(texts):
            raise ValueError("start, end and text lists have different lengths")
        return [Caption(float(s), float(e), t) for s, e, t in zip(starts, ends, texts)]
    out = []
    for item in captions:
        if isinstance(item, Caption):
            out.append(item)
        else:
            start, end, text = item
            out.append(Caption(float(start), float(end), text))
    return out


def _overlap(previous: list[str], current: list[str]) -> int:
    """Length of the longest tail of ``previous`` that ``current`` starts with."""
    for size in range(min(len(previous), len(current)), 0, -1):
        if previous[-size:] == current[:size]:
            return size
    return 0


def dedup_rolling(captions: Any) -> list[Caption]:
    """Remove the words each ASR line repeats from the line before; drop lines left empty.

    Per line, compared word by word with the last kept line:
    * it repeats the end of that line entirely -> nothing new: the kept line's end time is extended;
    * it starts with all of that line -> the kept line grows into it (earliest start, latest end);
    * it starts with a tail of that line -> that tail is cut from it (it was already said), the rest
      is kept with the line's own start and end;
    * otherwise it is kept as it is.
    Newlines and runs of spaces become single spaces; non-text and empty lines are dropped.
    """
    kept: list[list] = []  # [start, end, words]
    for caption in as_captions(captions):
        if not isinstance(caption.text, str):
            continue
        words = caption.text.split()
        if not words:
            continue
        if kept:
            last = kept[-1]
            if last[2][-len(words):] == words:
                last[1] = max(last[1], caption.end)
                continue
            if words[:len(last[2])] == last[2]:
                last[0], last[1], last[2] = min(last[0], caption.start), max(last[1], caption.end), words
                continue
            words = words[_overlap(last[2], words):]
        kept.append([caption.start, caption.end, words])
    return [Caption(start, end, " ".join(words)) for start, end, words in kept]


# --- WebVTT (yt-dlp auto-captions) --------------------------------------------------------------

def _seconds(hours: str | None, minutes: str, seconds: str, millis: str) -> float:
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000.0


def _clean_line(line: str) -> str:
    """Cue text without tags (<c>, </c>, <00:00:01.500>, <v Name>, <i>) or entities, spaces collapsed."""
    return " ".join(html.unescape(VTT_TAG.sub("", line)).split())


def read_vtt_cues(text: str) -> list[tuple[float, float, list[str]]]:
    """Every cue of a WebVTT document: (start, end, non-empty cleaned text lines)."""
    cues: list[tuple[float, float, list[str]]] = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    position = 0
    while position < len(lines):
        match = VTT_TIMING.match(lines[position])
        position += 1
        if not match:
            continue  # header, NOTE / STYLE blocks, cue identifiers
        groups = match.groups()
        start, end = _seconds(*groups[:4]), _seconds(*groups[4:])
        body: list[str] = []
        # A cue's text ends at the first empty line (a line holding only a space is still text).
        while position < len(lines) and lines[position] != "" and not VTT_TIMING.match(lines[position]):
            cleaned = _clean_line(lines[position])
            if cleaned:
                body.append(cleaned)
            position += 1
        cues.append((start, end, body))
    return cues


def parse_vtt(path: str | Path) -> list[Caption]:
    """Captions of a WebVTT file, each line once.

    YouTube auto-captions show two lines: every cue repeats the line(s) of the cue before it and adds
    a new one (plus 10 ms cues that only repeat). A cue's leading lines that equal the previous cue's
    trailing lines are dropped; what is left is new speech, timed by its cue. Cues with nothing new
    are skipped. Plain (non-rolling) VTT passes through unchanged.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CaptionFileError(f"cannot read caption file {path}: {exc}") from exc
    if not text.lstrip().startswith("WEBVTT"):
        raise CaptionFileError(f"{path} is not a WebVTT file (no WEBVTT header)")
    captions: list[Caption] = []
    previous: list[str] = []
    for start, end, body in read_vtt_cues(text):
        repeated = 0
        for size in range(min(len(previous), len(body)), 0, -1):
            if previous[-size:] == body[:size]:
                repeated = size
                break
        new = body[repeated:]
        if new:
            captions.append(Caption(start, end, " ".join(new)))
        previous = body
    return captions


# --- per-corpus caption source ------------------------------------------------------------------

def captions_paths_from_ledgers(ledgers: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """video_id -> captions_path of download-ledger rows that have one."""
    return {row["video_id"]: row["captions_path"] for row in ledgers if row.get("captions_path")}


class CaptionSource:
    """The captions of one corpus's videos, from where its ``caption_format`` says they are.

    * ``vtt``: the auto-caption file the download ledger names (``captions_path``), via :func:`parse_vtt`;
    * HowTo100M's ``caption_json`` / ``raw_caption_json``: the shard's caption file (``caption_shard``,
      made by ``mcnflow split-captions``; caption.json itself is never read here), with
      :func:`dedup_rolling` applied for ``raw_caption_json``;
    * the annotation-based readers: the corpus's captions as they are, in their order (YouCook2's
      captions are its annotated steps, so their order must not change).
    """

    def __init__(self, corpus, spec: Mapping[str, Any], captions_paths: Mapping[str, str] | None = None,
                 caption_shard: str | Path | None = None, shard: str | None = None):
        self.corpus = corpus
        self.caption_format = spec.get("caption_format", "caption_json")
        self.captions_paths = dict(captions_paths or {})
        if splits_captions(dict(spec)):
            if caption_shard is None:
                raise CaptionFileError(f"corpus {corpus.name!r} ({self.caption_format}) reads its captions per shard: "
                                       "the shard's caption file (results/captions/<corpus>/shard-NNNNN.jsonl, "
                                       "made by `mcnflow split-captions`) is needed")
            corpus.open_caption_shard(caption_shard, shard)

    def captions(self, video_id: str) -> list[Caption]:
        if self.caption_format == "vtt":
            path = self.captions_paths.get(video_id)
            return parse_vtt(path) if path else []
        captions = as_captions(self.corpus.captions(video_id))
        if self.caption_format == "raw_caption_json":
            return dedup_rolling(captions)
        return captions
