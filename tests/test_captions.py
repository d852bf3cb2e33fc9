"""Caption handling: MCN's tokenizer, rolling-ASR de-duplication, YouTube auto-caption VTT."""

from __future__ import annotations

import json

import pytest

from mcnflow.caption_split import split_captions
from mcnflow.corpora import Caption, open_corpus
from mcnflow.features.captions import (CaptionFileError, CaptionSource, dedup_rolling, parse_vtt, tokenize,
                                       words_of)

# --- tokenizer ------------------------------------------------------------------------------------

VOCAB = {"Don't", "over", "mix", "the", "batter", "OK", "Now", "we", "chop", "tomato", "tomatoes"}


def test_words_split_like_mcn():
    assert words_of("Don't over-mix the batter, OK?") == ["Don't", "over", "mix", "the", "batter", "OK"]
    assert words_of("now... we chop\nthe tomato!") == ["now", "we", "chop", "the", "tomato"]


def test_tokenize_keeps_case_drops_oov_and_truncates():
    text = "Now we chop the tomato, then The TOMATOES go in: don't stir"
    # "then", "go", "in", "stir" are out of vocabulary; "The" / "TOMATOES" / "don't" differ in case from it.
    assert tokenize(text, VOCAB, None) == ["Now", "we", "chop", "the", "tomato"]
    assert tokenize(text, VOCAB, 3) == ["Now", "we", "chop"]
    assert tokenize("Don't over-mix", VOCAB, 20) == ["Don't", "over", "mix"]
    assert tokenize("nothing known here", VOCAB, 20) == []


# --- rolling ASR (raw_caption.json) ---------------------------------------------------------------

RAW_CAPTION = {  # one video of raw_caption.json: parallel lists, YouTube's rolling two-line display
    "start": [0.0, 2.1, 4.3, 6.2, 8.0, 9.5, 12.0, 14.0, 16.0],
    "end": [4.3, 6.2, 8.0, 9.5, 11.0, 12.0, 14.0, 16.0, 18.0],
    "text": [
        "so today we are going",
        "so today we are going to make a cake",      # grows the previous line
        "we are going to make a cake\nfirst we need",  # repeats its tail, then new words
        "first we need flour",                      # grows it again
        "flour",                                    # only repeats
        "",                                         # empty ASR line
        "preheat the  oven",                        # unrelated line
        "preheat the oven",                         # whole duplicate
        "the oven to 180 degrees",                  # partial overlap
    ],
}


def test_dedup_rolling_on_raw_caption_sample():
    assert dedup_rolling(RAW_CAPTION) == [
        Caption(0.0, 6.2, "so today we are going to make a cake"),
        Caption(4.3, 11.0, "first we need flour"),
        Caption(12.0, 16.0, "preheat the oven"),
        Caption(16.0, 18.0, "to 180 degrees"),
    ]


def test_dedup_rolling_brief_examples_and_inputs():
    assert [c.text for c in dedup_rolling([(0, 2, "we are going to make"), (2, 4, "to make a cake today")])] == \
        ["we are going to make", "a cake today"]
    # non-text entries (NaN in some dumps) and whitespace-only lines are dropped; no overlap -> unchanged
    captions = [Caption(0, 1, "hello there"), Caption(1, 2, float("nan")), Caption(2, 3, "  "), Caption(3, 4, "bye")]
    assert dedup_rolling(captions) == [Caption(0, 1, "hello there"), Caption(3, 4, "bye")]
    assert dedup_rolling({"start": [], "end": [], "text": []}) == []
    with pytest.raises(ValueError):
        dedup_rolling({"start": [0], "end": [1, 2], "text": ["a"]})


# --- WebVTT -------------------------------------------------------------------------------------

YOUTUBE_VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.000 --> 00:00:02.750 align:start position:0%
 
so<00:00:00.320><c> today</c><00:00:00.640><c> we</c><00:00:00.880><c> are</c><00:00:01.120><c> going</c>

00:00:02.750 --> 00:00:02.760 align:start position:0%
so today we are going
 

00:00:02.760 --> 00:00:05.000 align:start position:0%
so today we are going
to<00:00:03.000><c> make</c><00:00:03.300><c> a</c><00:00:03.500><c> cake</c>

00:00:05.000 --> 00:00:05.010 align:start position:0%
to make a cake
 

00:00:05.010 --> 00:00:07.000 align:start position:0%
to make a cake
yeah<00:00:05.500><c> yeah</c>

00:00:07.000 --> 00:00:07.010 align:start position:0%
yeah yeah
 

00:00:07.010 --> 00:00:09.000 align:start position:0%
yeah yeah
yeah<00:00:07.500><c> yeah</c>

00:00:09.000 --> 00:00:09.010 align:start position:0%
yeah yeah
 

01:00:09.010 --> 01:00:11.500 align:start position:0%
yeah yeah
salt<00:00:09.500><c.colorE5E5E5> &amp;</c><00:00:09.800><c> pepper</c>
"""

PLAIN_VTT = """\ufeffWEBVTT

NOTE written by hand, no rolling

intro
00:01.000 --> 00:03.500
<v Chef>Chop the onion.</v>

00:04.000 --> 00:06.000 line:0
Add the onion
to the pan.
"""


def test_parse_youtube_auto_captions(tmp_path):
    path = tmp_path / "abcdefghijk.en.vtt"
    path.write_text(YOUTUBE_VTT, encoding="utf-8")
    assert parse_vtt(path) == [
        Caption(0.0, 2.75, "so today we are going"),
        Caption(2.76, 5.0, "to make a cake"),
        Caption(5.01, 7.0, "yeah yeah"),
        Caption(7.01, 9.0, "yeah yeah"),  # said again: a new line, not a rolling repeat
        Caption(3609.01, 3611.5, "salt & pepper"),
    ]


def test_parse_plain_vtt(tmp_path):
    path = tmp_path / "plain.vtt"
    path.write_text(PLAIN_VTT, encoding="utf-8")
    assert parse_vtt(path) == [Caption(1.0, 3.5, "Chop the onion."), Caption(4.0, 6.0, "Add the onion to the pan.")]


def test_parse_vtt_errors(tmp_path):
    with pytest.raises(CaptionFileError, match="cannot read"):
        parse_vtt(tmp_path / "missing.vtt")
    (tmp_path / "bad.vtt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhi\n", encoding="utf-8")
    with pytest.raises(CaptionFileError, match="not a WebVTT"):
        parse_vtt(tmp_path / "bad.vtt")


# --- caption sources per caption_format -----------------------------------------------------------

def howto_spec(tmp_path, caption_format):
    (tmp_path / "HowTo100M_v1.csv").write_text(
        "video_id,category_1,category_2,rank,task_id\nabcdefghijk,Food,Cakes,1,100\n", encoding="utf-8")
    (tmp_path / "raw_caption.json").write_text(json.dumps({"abcdefghijk": RAW_CAPTION}), encoding="utf-8")
    return {"reader": "howto100m", "videos_csv": str(tmp_path / "HowTo100M_v1.csv"),
            "captions": str(tmp_path / "raw_caption.json"), "caption_format": caption_format,
            "source": "url", "url_template": "https://www.youtube.com/watch?v={video_id}"}


def caption_shard(tmp_path, spec):
    """The split of the spec's caption file (one shard), as `mcnflow split-captions` writes it."""
    corpus = open_corpus("howto", spec)
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("video_id\tshard\tsource\nabcdefghijk\t00000\thttps://x\n", encoding="utf-8")
    split_captions(corpus, str(manifest), tmp_path / "captions", buffer_bytes=1 << 20)
    return tmp_path / "captions" / "shard-00000.jsonl"


def test_caption_source_formats(tmp_path):
    raw = howto_spec(tmp_path, "raw_caption_json")
    shard = caption_shard(tmp_path, raw)
    assert len(CaptionSource(open_corpus("howto", raw), raw, caption_shard=shard).captions("abcdefghijk")) == 4
    as_is = howto_spec(tmp_path, "caption_json")
    assert len(CaptionSource(open_corpus("howto", as_is), as_is, caption_shard=shard).captions("abcdefghijk")) == 9
    # caption.json is only ever read by the split: a source without the shard's file is refused
    with pytest.raises(CaptionFileError, match="reads its captions per shard"):
        CaptionSource(open_corpus("howto", as_is), as_is)
    vtt_path = tmp_path / "abcdefghijk.en.vtt"
    vtt_path.write_text(YOUTUBE_VTT, encoding="utf-8")
    vtt = howto_spec(tmp_path, "vtt")
    source = CaptionSource(open_corpus("howto", vtt), vtt, {"abcdefghijk": str(vtt_path)})
    assert [c.text for c in source.captions("abcdefghijk")][:2] == ["so today we are going", "to make a cake"]
    assert source.captions("zzzzzzzzzzz") == []  # the download ledger named no caption file
