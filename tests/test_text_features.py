"""Vocabulary (word2vec trained or GoogleNews-format binary) and text shards (caption token ids)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from mcnflow.core.config import ConfigError
from mcnflow.features import text, vocabulary
from mcnflow.features.store import ShardReader, read_vocabulary, write_vocabulary
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, NORMALIZE_COLUMNS, read_ledger, write_ledger

W2V = {"source": "train", "path": "unused.bin", "limit": None, "vector_size": 16, "window": 3, "min_count": 1,
       "epochs": 5, "seed": 0}
TEXT_SETTINGS = {"max_words": 4, "word2vec": W2V}

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
    return specs, manifests


def run(module, argv):
    parser = argparse.ArgumentParser()
    module.configure_parser(parser)
    return module.main(parser.parse_args(argv))


def build_vocab(tmp_path, specs, manifests, settings, name="vocabulary.h5"):
    out = tmp_path / name
    assert run(vocabulary, ["--corpora", json.dumps(specs), "--train-corpus", "howto100m",
                            "--manifests", *map(str, manifests), "--output", str(out),
                            "--settings", json.dumps(settings)]) == 0
    return read_vocabulary(out)


# --- vocabulary -----------------------------------------------------------------------------------

def test_vocabulary_trained_on_training_captions_is_deterministic(tmp_path, corpora):
    specs, manifests = corpora
    words, vectors, attrs = build_vocab(tmp_path, specs, manifests, TEXT_SETTINGS)
    training_words = {w for c in HOWTO_CAPTIONS.values() for t in c["text"] for w in t.split()}
    # only words word2vec saw in the training corpus; YouCook2-only words ("garnish", "finely") have no vector
    assert set(words) == training_words
    assert vectors.shape == (len(words), 16) and vectors.dtype == np.float32
    assert attrs["source"] == "train" and attrs["n_words"] == len(words) and attrs["train_corpus"] == "howto100m"
    again, vectors_again, _ = build_vocab(tmp_path, specs, manifests, TEXT_SETTINGS, name="again.h5")
    assert again == words
    np.testing.assert_array_equal(vectors, vectors_again)


def write_binary(path, words, dim=8, seed=0):
    from gensim.models import KeyedVectors
    kv = KeyedVectors(vector_size=dim)
    vectors = np.random.default_rng(seed).standard_normal((len(words), dim)).astype(np.float32)
    kv.add_vectors(words, vectors)
    kv.save_word2vec_format(str(path), binary=True)
    return dict(zip(words, vectors))


def test_vocabulary_from_googlenews_binary_with_limit(tmp_path, corpora):
    specs, manifests = corpora
    # GoogleNews order: most frequent first; "Tomato" differs in case from the captions' "tomato"
    binary_words = ["the", "we", "Tomato", "fry", "unrelated", "garnish", "onion", "chop"]
    truth = write_binary(tmp_path / "tiny.bin", binary_words)
    settings = {"max_words": 20, "word2vec": {**W2V, "source": "googlenews", "path": str(tmp_path / "tiny.bin")}}
    words, vectors, attrs = build_vocab(tmp_path, specs, manifests, settings)
    assert words == ["the", "we", "fry", "garnish", "onion", "chop"]
    np.testing.assert_allclose(vectors, np.stack([truth[w] for w in words]), rtol=1e-6)
    assert attrs["source"] == "googlenews" and attrs["n_words"] == 6

    settings["word2vec"]["limit"] = 5  # only the 5 most frequent words of the binary are loaded
    words, _, attrs = build_vocab(tmp_path, specs, manifests, settings, name="limited.h5")
    assert words == ["the", "we", "fry"] and attrs["limit"] == 5


def test_vocabulary_missing_binary_names_the_key(tmp_path, corpora):
    specs, manifests = corpora
    settings = {"max_words": 20, "word2vec": {**W2V, "source": "googlenews", "path": str(tmp_path / "nope.bin")}}
    with pytest.raises(ConfigError, match=r"features\.text\.word2vec\.path"):
        build_vocab(tmp_path, specs, manifests, settings)


# --- text shards ----------------------------------------------------------------------------------

def normalize_ledger(path, statuses):
    rows = [{"video_id": vid, "status": status, "has_audio": True, "path": f"{vid}.mp4"}
            for vid, status in statuses.items()]
    write_ledger(path, rows, NORMALIZE_COLUMNS)
    return path


def test_youcook2_text_shard_round_trip_keeps_caption_alignment(tmp_path, corpora):
    specs, manifests = corpora
    vocab_words = ["chop", "the", "tomato", "and", "onion", "fry"]
    write_vocabulary(tmp_path / "vocab.h5", vocab_words, np.eye(6, dtype=np.float32), {"source": "test"})
    norm = normalize_ledger(tmp_path / "norm.tsv", {"youcookvid1": "ok", "youcookvid2": "corrupt",
                                                   "youcookvid3": "ok"})
    out, ledger = tmp_path / "text" / "shard-00000.h5", tmp_path / "text" / "shard-00000.tsv"
    assert run(text, ["--corpus", "youcook2", "--corpus-spec", json.dumps(specs["youcook2"]),
                      "--manifest", str(manifests[1]), "--shard", "00000", "--normalize-ledger", str(norm),
                      "--vocabulary", str(tmp_path / "vocab.h5"), "--output", str(out), "--ledger", str(ledger),
                      "--settings", json.dumps(TEXT_SETTINGS)]) == 0
    rows = {row["video_id"]: row for row in read_ledger(ledger)}
    assert {v: r["status"] for v, r in rows.items()} == {"youcookvid1": "ok", "youcookvid2": "no_media",
                                                        "youcookvid3": "no_captions"}
    assert rows["youcookvid1"]["length"] == "3"
    reader = ShardReader(out)
    data = reader.read("youcookvid1")
    assert data["token_ids"].dtype == np.int32 and data["offsets"].dtype == np.int64
    assert data["start"].dtype == np.float32 and data["end"].dtype == np.float32
    captions = [[vocab_words[i] for i in data["token_ids"][a:b]] for a, b in zip(data["offsets"], data["offsets"][1:])]
    # caption 0 is cut at max_words (4); caption 1 has no known word but keeps its place; caption 2 is step 2
    assert captions == [["chop", "the", "tomato", "and"], [], ["fry", "the", "onion"]]
    np.testing.assert_array_equal(data["start"], [1, 6, 10])
    np.testing.assert_array_equal(data["end"], [5, 9, 14])
    attrs = reader.attrs
    assert attrs["max_words"] == 4 and attrs["caption_format"] == "caption_json"
    assert len(attrs["vocabulary_sha256"]) == 64 and attrs["vocabulary_source"] == "test"
    assert reader.video_ids() == ["youcookvid1"]


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
    write_vocabulary(tmp_path / "vocab.h5", ["tomato", "we", "chop", "the"], np.ones((4, 3), np.float32), {})
    out, ledger = tmp_path / "shard-00002.h5", tmp_path / "shard-00002.tsv"
    assert run(text, ["--corpus", "howto100m", "--corpus-spec", json.dumps(spec), "--manifest", str(manifest),
                      "--shard", "00002", "--download-ledger", str(tmp_path / "download.tsv"),
                      "--normalize-ledger", str(norm), "--vocabulary", str(tmp_path / "vocab.h5"),
                      "--output", str(out), "--ledger", str(ledger), "--settings", json.dumps(TEXT_SETTINGS)]) == 0
    rows = {row["video_id"]: row for row in read_ledger(ledger)}
    assert [rows[v]["status"] for v in ids] == ["ok", "error", "no_captions"]
    assert "gone.en.vtt" in rows["vttvideo002"]["message"]
    data = ShardReader(out).read("vttvideo001")
    assert data["token_ids"].tolist() == [1, 2, 3, 0]  # "we chop" | "the tomato"
    assert data["offsets"].tolist() == [0, 2, 4]
    np.testing.assert_allclose(data["start"], [0.0, 2.01], rtol=1e-6)
