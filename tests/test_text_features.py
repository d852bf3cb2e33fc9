"""The word2vec source (trained on the training corpus, or a GoogleNews-format binary) and text shards
(caption tokens with the vectors of the words they use)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from mcnflow.caption_split import split_captions
from mcnflow.core.config import ConfigError
from mcnflow.corpora import open_corpus
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, NORMALIZE_COLUMNS, read_ledger, write_ledger
from mcnflow.features import text, word2vec
from mcnflow.features.store import ShardReader
from mcnflow.features.text_index import TextIndex
from mcnflow.features.word2vec import WordVectors, read_word_vectors, write_word_vectors

W2V = {"source": "train", "path": "unused.bin", "limit": None, "vector_size": 16, "window": 3, "min_count": 1,
       "epochs": 5, "seed": 0}

HOWTO_CAPTIONS = {
    "howtovideo1": {"start": [0.0, 3.0], "end": [3.0, 6.0],
                    "text": ["now we chop the tomato", "then we fry the onion"]},
    "howtovideo2": {"start": [0.0], "end": [4.0], "text": ["we chop the onion and fry the tomato"]},
}
YOUCOOK = {"database": {
    "youcookvid1": {"duration": 30.0, "subset": "validation", "recipe_type": "101", "video_url": "",
                    "annotations": [{"segment": [1, 5], "id": 0, "sentence": "chop the tomato and the onion finely"},
                                    {"segment": [6, 9], "id": 1, "sentence": "garnish with parsley"},
                                    {"segment": [10, 14], "id": 2, "sentence": "fry the onion"}]},
    "youcookvid2": {"duration": 20.0, "subset": "validation", "recipe_type": "102", "video_url": "",
                    "annotations": [{"segment": [0, 4], "id": 0, "sentence": "fry the tomato"}]},
    "youcookvid3": {"duration": 20.0, "subset": "validation", "recipe_type": "103", "video_url": "",
                    "annotations": []},
}}


def write_manifest(path, ids, shard="00000"):
    path.write_text("video_id\tshard\tsource\n" + "".join(f"{v}\t{shard}\thttps://x/{v}\n" for v in ids),
                    encoding="utf-8")
    return path


@pytest.fixture
def corpora(tmp_path):
    (tmp_path / "HowTo100M_v1.csv").write_text(
        "video_id,category_1,category_2,rank,task_id\n"
        + "".join(f"{v},Food,Cooking,1,1\n" for v in HOWTO_CAPTIONS), encoding="utf-8")
    (tmp_path / "caption.json").write_text(json.dumps(HOWTO_CAPTIONS), encoding="utf-8")
    (tmp_path / "youcook.json").write_text(json.dumps(YOUCOOK), encoding="utf-8")
    url = "https://www.youtube.com/watch?v={video_id}"
    specs = {
        "howto100m": {"reader": "howto100m", "videos_csv": str(tmp_path / "HowTo100M_v1.csv"),
                      "captions": str(tmp_path / "caption.json"), "caption_format": "caption_json",
                      "source": "url", "url_template": url, "id_kind": "youtube"},
        "youcook2": {"reader": "youcook2", "annotations": str(tmp_path / "youcook.json"), "subset": "validation",
                     "source": "url", "url_template": url, "id_kind": "youtube"},
    }
    manifests = [write_manifest(tmp_path / "howto100m.tsv", list(HOWTO_CAPTIONS)),
                 write_manifest(tmp_path / "youcook2.tsv", list(YOUCOOK["database"]))]
    # HowTo100M's caption.json is read per shard: split it as the workflow's split_captions job does
    split_captions(open_corpus("howto100m", specs["howto100m"]), str(manifests[0]), tmp_path / "captions", 1 << 20)
    return specs, manifests


def run(module, argv):
    parser = argparse.ArgumentParser()
    module.configure_parser(parser)
    return module.main(parser.parse_args(argv))


def build_word2vec(tmp_path, spec, manifest, w2v, name="word2vec.h5"):
    out = tmp_path / name
    settings = {"word2vec": w2v, "corpus": "howto100m", "spec": spec}
    assert run(word2vec, ["--manifest", str(manifest), "--captions-dir", str(tmp_path / "captions"),
                          "--output", str(out), "--settings", json.dumps(settings)]) == 0
    return read_word_vectors(out)


def text_settings(corpus, spec, max_words=4):
    return json.dumps({"corpus": corpus, "spec": spec, "max_words": max_words, "compression": None})


# --- the word2vec source ---------------------------------------------------------------------------

def test_word2vec_trained_on_the_training_captions_only_is_deterministic(tmp_path, corpora):
    specs, manifests = corpora
    vectors = build_word2vec(tmp_path, specs["howto100m"], manifests[0], W2V)
    training_words = {w for c in HOWTO_CAPTIONS.values() for t in c["text"] for w in t.split()}
    # only the training corpus's words; YouCook2-only words ("garnish", "finely") have no vector
    assert set(vectors.words) == training_words
    assert vectors.vectors.shape == (len(training_words), 16) and vectors.vectors.dtype == np.float32
    assert vectors.attrs["source"] == "train" and vectors.attrs["train_corpus"] == "howto100m"
    again = build_word2vec(tmp_path, specs["howto100m"], manifests[0], W2V, name="again.h5")
    assert again.words == vectors.words and again.fingerprint == vectors.fingerprint
    np.testing.assert_array_equal(vectors.vectors, again.vectors)
    other = build_word2vec(tmp_path, specs["howto100m"], manifests[0], {**W2V, "seed": 1}, name="other.h5")
    assert other.fingerprint != vectors.fingerprint


def test_word2vec_on_split_captions_needs_the_caption_directory(tmp_path, corpora):
    specs, manifests = corpora
    settings = {"word2vec": W2V, "corpus": "howto100m", "spec": specs["howto100m"]}
    with pytest.raises(ConfigError, match="--captions-dir"):
        run(word2vec, ["--manifest", str(manifests[0]), "--output", str(tmp_path / "x.h5"),
                       "--settings", json.dumps(settings)])


def write_binary(path, words, dim=8, seed=0):
    from gensim.models import KeyedVectors
    kv = KeyedVectors(vector_size=dim)
    vectors = np.random.default_rng(seed).standard_normal((len(words), dim)).astype(np.float32)
    kv.add_vectors(words, vectors)
    kv.save_word2vec_format(str(path), binary=True)
    return dict(zip(words, vectors))


def test_word2vec_from_a_googlenews_binary_with_limit(tmp_path, corpora):
    specs, manifests = corpora
    binary_words = ["the", "we", "Tomato", "fry", "unrelated", "garnish", "onion", "chop"]
    truth = write_binary(tmp_path / "tiny.bin", binary_words)
    w2v = {**W2V, "source": "googlenews", "path": str(tmp_path / "tiny.bin")}
    vectors = build_word2vec(tmp_path, specs["howto100m"], manifests[0], w2v)
    # the source depends on no corpus: every word of the binary, in its (frequency) order
    assert vectors.words == binary_words
    np.testing.assert_allclose(vectors.vectors, np.stack([truth[w] for w in binary_words]), rtol=1e-6)
    limited = build_word2vec(tmp_path, specs["howto100m"], manifests[0], {**w2v, "limit": 5}, name="limited.h5")
    assert limited.words == binary_words[:5] and limited.attrs["limit"] == 5


def test_missing_binary_names_the_key(tmp_path, corpora):
    specs, manifests = corpora
    w2v = {**W2V, "source": "googlenews", "path": str(tmp_path / "nope.bin")}
    with pytest.raises(ConfigError, match=r"features\.text\.word2vec\.path"):
        build_word2vec(tmp_path, specs["howto100m"], manifests[0], w2v)


def test_settings_json_is_validated_against_the_schema(tmp_path, corpora):
    specs, manifests = corpora
    settings = {"word2vec": {**W2V, "source": "wikipedia"}, "corpus": "howto100m", "spec": specs["howto100m"]}
    with pytest.raises(ConfigError, match=r"settings key 'word2vec.source': 'wikipedia' is not allowed; "
                                          r"allowed values: 'googlenews', 'train'"):
        run(word2vec, ["--manifest", str(manifests[0]), "--output", str(tmp_path / "x.h5"),
                       "--settings", json.dumps(settings)])


# --- text shards ----------------------------------------------------------------------------------

def normalize_ledger(path, statuses):
    rows = [{"video_id": vid, "status": status, "has_audio": True, "path": f"{vid}.mp4"}
            for vid, status in statuses.items()]
    write_ledger(path, rows, NORMALIZE_COLUMNS)
    return path


def source(tmp_path, words, dim=6):
    vectors = np.arange(len(words) * dim, dtype=np.float32).reshape(len(words), dim)
    write_word_vectors(tmp_path / "w2v.h5", WordVectors(words, vectors, {"source": "test"}))
    return read_word_vectors(tmp_path / "w2v.h5")


def test_youcook2_text_shard_carries_its_words_vectors_and_keeps_caption_alignment(tmp_path, corpora):
    specs, manifests = corpora
    w2v = source(tmp_path, ["unused", "chop", "the", "tomato", "and", "onion", "fry"])
    norm = normalize_ledger(tmp_path / "norm.tsv", {"youcookvid1": "ok", "youcookvid2": "corrupt",
                                                   "youcookvid3": "ok"})
    out, ledger = tmp_path / "text" / "shard-00000.h5", tmp_path / "text" / "shard-00000.tsv"
    assert run(text, ["--corpus", "youcook2", "--manifest", str(manifests[1]), "--shard", "00000",
                      "--normalize-ledger", str(norm), "--word2vec", str(tmp_path / "w2v.h5"),
                      "--output", str(out), "--ledger", str(ledger),
                      "--settings", text_settings("youcook2", specs["youcook2"])]) == 0
    rows = {row["video_id"]: row for row in read_ledger(ledger)}
    assert {v: r["status"] for v, r in rows.items()} == {"youcookvid1": "ok", "youcookvid2": "no_media",
                                                        "youcookvid3": "no_captions"}
    assert rows["youcookvid1"]["length"] == "3"
    reader = ShardReader(out)
    data = reader.read("youcookvid1")
    assert data["token_ids"].dtype == np.int32 and data["offsets"].dtype == np.int64
    words, vectors = reader.word_table()
    assert "unused" not in words  # only the words the shard uses are copied
    np.testing.assert_array_equal(vectors, w2v.vectors[[w2v.ids[w] for w in words]])
    captions = [[words[i] for i in data["token_ids"][a:b]] for a, b in zip(data["offsets"], data["offsets"][1:])]
    # caption 0 is cut at max_words (4); caption 1 has no known word but keeps its place; caption 2 is step 2
    assert captions == [["chop", "the", "tomato", "and"], [], ["fry", "the", "onion"]]
    np.testing.assert_array_equal(data["start"], [1, 6, 10])
    np.testing.assert_array_equal(data["end"], [5, 9, 14])
    attrs = reader.attrs
    assert attrs["max_words"] == 4 and attrs["caption_format"] == "caption_json"
    assert attrs["word2vec_fingerprint"] == w2v.fingerprint and attrs["word2vec_source"] == "test"
    assert reader.video_ids() == ["youcookvid1"]
    # what training and evaluation read: each token's word vector
    index = TextIndex([out])
    assert index.fingerprint == w2v.fingerprint
    np.testing.assert_array_equal(index.read("youcookvid1")["vectors"][:4],
                                  w2v.vectors[[w2v.ids[w] for w in ["chop", "the", "tomato", "and"]]])


def test_text_shards_of_another_word2vec_source_are_refused(tmp_path, corpora):
    specs, manifests = corpora
    norm = normalize_ledger(tmp_path / "norm.tsv", dict.fromkeys(YOUCOOK["database"], "ok"))
    paths = []
    for k, words in enumerate((["chop", "the"], ["the", "chop"])):
        (tmp_path / str(k)).mkdir()
        source(tmp_path / str(k), words)
        out = tmp_path / str(k) / "shard-00000.h5"
        assert run(text, ["--corpus", "youcook2", "--manifest", str(manifests[1]), "--shard", "00000",
                          "--normalize-ledger", str(norm), "--word2vec", str(tmp_path / str(k) / "w2v.h5"),
                          "--output", str(out), "--ledger", str(tmp_path / str(k) / "shard-00000.tsv"),
                          "--settings", text_settings("youcook2", specs["youcook2"])]) == 0
        paths.append(out)
    with pytest.raises(ValueError, match="different word2vec sources"):
        TextIndex(paths)
    index = TextIndex(paths[:1])
    with pytest.raises(ValueError, match="but the checkpoint used"):
        index.require("0" * 64, "the checkpoint")


def test_a_killed_text_shard_resumes_from_its_journal(tmp_path, corpora, monkeypatch):
    specs, manifests = corpora
    source(tmp_path, ["chop", "the", "tomato", "and", "onion", "fry"])
    norm = normalize_ledger(tmp_path / "norm.tsv", dict.fromkeys(YOUCOOK["database"], "ok"))
    out, ledger = tmp_path / "text" / "shard-00000.h5", tmp_path / "text" / "shard-00000.tsv"
    argv = ["--corpus", "youcook2", "--manifest", str(manifests[1]), "--shard", "00000",
            "--normalize-ledger", str(norm), "--word2vec", str(tmp_path / "w2v.h5"), "--output", str(out),
            "--ledger", str(ledger), "--settings", text_settings("youcook2", specs["youcook2"])]
    read_captions = text.CaptionSource.captions
    calls = []

    def killed_at_the_second_video(self, video_id):
        calls.append(video_id)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a SIGINT/kill looks like mid-shard
        return read_captions(self, video_id)

    monkeypatch.setattr(text.CaptionSource, "captions", killed_at_the_second_video)
    with pytest.raises(KeyboardInterrupt):
        run(text, argv)
    assert not out.exists() and not ledger.exists()
    assert (ledger.parent / "shard-00000.tsv.journal").exists()
    calls.clear()
    monkeypatch.setattr(text.CaptionSource, "captions", lambda self, vid: calls.append(vid) or read_captions(self, vid))
    assert run(text, argv) == 0
    assert calls == ["youcookvid2", "youcookvid3"]  # the first video was not redone
    assert [r["status"] for r in read_ledger(ledger)] == ["ok", "ok", "no_captions"]
    assert ShardReader(out).video_ids() == ["youcookvid1", "youcookvid2"]
    leftovers = sorted(p.name for p in ledger.parent.iterdir())
    assert leftovers == ["shard-00000.h5", "shard-00000.tsv"]


def test_howto100m_text_shard_reads_its_shard_caption_file_and_names_bad_entries(tmp_path, corpora):
    specs, _ = corpora
    spec = specs["howto100m"]
    captions = {**HOWTO_CAPTIONS,
                "badlength01": {"start": [0.0, 1.0], "end": [1.0], "text": ["a", "b"]},
                "badtimes001": {"start": ["noon"], "end": [4.0], "text": ["we chop"]}}
    (tmp_path / "caption.json").write_text(json.dumps(captions), encoding="utf-8")
    ids = ["nocaptions1", "badlength01", "howtovideo2", "badtimes001", "howtovideo1"]
    manifest = tmp_path / "split.tsv"
    manifest.write_text("video_id\tshard\tsource\n" + "".join(f"{v}\t{i // 3:05d}\thttps://x/{v}\n"
                                                             for i, v in enumerate(ids)), encoding="utf-8")
    split_captions(open_corpus("howto100m", spec), str(manifest), tmp_path / "split", 1)
    source(tmp_path, ["we", "chop", "the", "onion", "fry", "tomato"])
    norm = normalize_ledger(tmp_path / "norm.tsv", dict.fromkeys(ids, "ok"))
    argv = ["--corpus", "howto100m", "--manifest", str(manifest), "--normalize-ledger", str(norm),
            "--word2vec", str(tmp_path / "w2v.h5"), "--settings", text_settings("howto100m", spec)]
    outcomes = {}
    for shard in ("00000", "00001"):
        out, ledger = tmp_path / f"shard-{shard}.h5", tmp_path / f"shard-{shard}.tsv"
        assert run(text, [*argv, "--shard", shard, "--captions", str(tmp_path / "split" / f"shard-{shard}.jsonl"),
                          "--output", str(out), "--ledger", str(ledger)]) == 0
        outcomes.update({row["video_id"]: row for row in read_ledger(ledger)})
    assert {v: r["status"] for v, r in outcomes.items()} == {
        "nocaptions1": "no_captions", "badlength01": "error", "howtovideo2": "ok", "badtimes001": "error",
        "howtovideo1": "ok"}
    assert "badlength01 has start/end/text of different lengths" in outcomes["badlength01"]["message"]
    assert "badtimes001: caption 0 has a non-numeric time" in outcomes["badtimes001"]["message"]
    reader = ShardReader(tmp_path / "shard-00001.h5")
    words = reader.word_table()[0]
    data = reader.read("howtovideo1")
    assert [words[i] for i in data["token_ids"][:3]] == ["we", "chop", "the"]
    # another shard's caption file, or none, is refused before any video is read
    with pytest.raises(ConfigError, match="is for shard '00000', not '00001'"):
        run(text, [*argv, "--shard", "00001", "--captions", str(tmp_path / "split" / "shard-00000.jsonl"),
                   "--output", str(tmp_path / "x.h5"), "--ledger", str(tmp_path / "x.tsv")])
    with pytest.raises(ConfigError, match="--captions"):
        run(text, [*argv, "--shard", "00001", "--output", str(tmp_path / "x.h5"), "--ledger", str(tmp_path / "x.tsv")])


VTT = """WEBVTT
Kind: captions
Language: en

00:00:00.000 --> 00:00:02.000 align:start position:0%
 
we<00:00:00.500><c> chop</c>

00:00:02.000 --> 00:00:02.010 align:start position:0%
we chop
 

00:00:02.010 --> 00:00:04.000 align:start position:0%
we chop
the<00:00:02.500><c> tomato</c>
"""


def test_vtt_text_shard_reads_captions_named_by_download_ledger(tmp_path, corpora):
    specs, _ = corpora
    spec = {**specs["howto100m"], "caption_format": "vtt"}
    ids = ["vttvideo001", "vttvideo002", "vttvideo003"]
    manifest = write_manifest(tmp_path / "howto100m.tsv", ids, shard="00002")
    (tmp_path / "vttvideo001.en.vtt").write_text(VTT, encoding="utf-8")
    write_ledger(tmp_path / "download.tsv", [
        {"video_id": "vttvideo001", "status": "ok", "captions_path": str(tmp_path / "vttvideo001.en.vtt")},
        {"video_id": "vttvideo002", "status": "ok", "captions_path": str(tmp_path / "gone.en.vtt")},
        {"video_id": "vttvideo003", "status": "ok", "captions_path": ""}], DOWNLOAD_COLUMNS)
    norm = normalize_ledger(tmp_path / "norm.tsv", dict.fromkeys(ids, "ok"))
    source(tmp_path, ["tomato", "we", "chop", "the"], dim=3)
    out, ledger = tmp_path / "shard-00002.h5", tmp_path / "shard-00002.tsv"
    assert run(text, ["--corpus", "howto100m", "--manifest", str(manifest),
                      "--shard", "00002", "--download-ledger", str(tmp_path / "download.tsv"),
                      "--normalize-ledger", str(norm), "--word2vec", str(tmp_path / "w2v.h5"),
                      "--output", str(out), "--ledger", str(ledger),
                      "--settings", text_settings("howto100m", spec)]) == 0
    rows = {row["video_id"]: row for row in read_ledger(ledger)}
    assert [rows[v]["status"] for v in ids] == ["ok", "error", "no_captions"]
    assert "gone.en.vtt" in rows["vttvideo002"]["message"]
    reader = ShardReader(out)
    data = reader.read("vttvideo001")
    words = reader.word_table()[0]
    assert [words[i] for i in data["token_ids"]] == ["we", "chop", "the", "tomato"]  # "we chop" | "the tomato"
    assert data["offsets"].tolist() == [0, 2, 4]
    np.testing.assert_allclose(data["start"], [0.0, 2.01], rtol=1e-6)
