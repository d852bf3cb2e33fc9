"""`mcnflow split-captions`: HowTo100M's caption.json read once, into one caption file per manifest shard,
so that a text job's memory does not depend on the corpus size."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

from mcnflow.caption_split import caption_shard_path, split_captions
from mcnflow.cli import main as cli_main
from mcnflow.core.config import ConfigError, load_config
from mcnflow.core.plan import Plan
from mcnflow.corpora import CorpusError, open_corpus
from mcnflow.corpora.howto100m import read_caption_shard

from workflow_utils import REPO

IDS = ["aaaaaaaaaa1", "aaaaaaaaaa2", "aaaaaaaaaa3", "aaaaaaaaaa4", "aaaaaaaaaa5"]


def entry(k):
    return {"start": [float(k), k + 2.5], "end": [k + 2.5, k + 5.0], "text": [f"caption {k} one", f"caption {k} two"]}


def howto(tmp_path, captions_text, ids=IDS, shard_size=2):
    """A HowTo100M corpus with ``captions_text`` as caption.json, and its manifest."""
    (tmp_path / "HowTo100M_v1.csv").write_text(
        "video_id,category_1,category_2,rank,task_id\n" + "".join(f"{v},Food,Cooking,1,1\n" for v in ids))
    (tmp_path / "caption.json").write_text(captions_text, encoding="utf-8")
    spec = {"reader": "howto100m", "videos_csv": str(tmp_path / "HowTo100M_v1.csv"),
            "captions": str(tmp_path / "caption.json"), "caption_format": "caption_json", "source": "url",
            "url_template": "https://www.youtube.com/watch?v={video_id}", "id_kind": "youtube", "limit": None}
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("video_id\tshard\tsource\n"
                        + "".join(f"{v}\t{i // shard_size:05d}\thttps://x/{v}\n" for i, v in enumerate(ids)))
    return spec, open_corpus("howto100m", spec), manifest


def test_every_entry_goes_to_its_shard_file_whatever_the_buffer(tmp_path):
    # ids 1, 3, 5 have captions (out of manifest order); 2 and 4 none; one video is not in the manifest;
    # 5 appears twice (json.load kept the later entry, and so does the reader)
    document = ('{"aaaaaaaaaa5": %s, "aaaaaaaaaa1": %s, "notinmanif1": %s, "aaaaaaaaaa3": %s, "aaaaaaaaaa5": %s}'
                % tuple(json.dumps(entry(k)) for k in (9, 1, 7, 3, 5)))
    _, corpus, manifest = howto(tmp_path, document)
    counts = split_captions(corpus, str(manifest), tmp_path / "one-at-a-time", buffer_bytes=1)
    assert counts == {"videos": 5, "shards": 3, "entries": 4, "not_in_manifest": 1, "duplicates": 1}
    split_captions(corpus, str(manifest), tmp_path / "all-at-once", buffer_bytes=1 << 30)
    for shard, expected in (("00000", {"aaaaaaaaaa1": entry(1)}), ("00001", {"aaaaaaaaaa3": entry(3)}),
                            ("00002", {"aaaaaaaaaa5": entry(5)})):
        for directory in ("one-at-a-time", "all-at-once"):
            assert read_caption_shard(caption_shard_path(tmp_path / directory, shard), "howto100m", shard) == expected
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == []


def test_a_failed_split_leaves_the_previous_output_and_no_partial_file(tmp_path):
    _, corpus, manifest = howto(tmp_path, json.dumps({v: entry(k) for k, v in enumerate(IDS)}))
    output = tmp_path / "captions"
    split_captions(corpus, str(manifest), output, buffer_bytes=1)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    (tmp_path / ".tmp-captions.killed").mkdir()  # what a killed split leaves
    (tmp_path / ".tmp-captions.killed" / "shard-00000.jsonl").write_text("{")
    text = (tmp_path / "caption.json").read_text()
    (tmp_path / "caption.json").write_text(text[: len(text) // 2])  # truncated mid-entry
    with pytest.raises(CorpusError, match=r"caption\.json: not valid JSON"):
        split_captions(corpus, str(manifest), output, buffer_bytes=1)
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_caption_file_that_is_not_an_object_is_refused(tmp_path):
    _, corpus, manifest = howto(tmp_path, json.dumps([entry(1)]))
    with pytest.raises(CorpusError, match="expected a JSON object mapping video_id -> captions"):
        split_captions(corpus, str(manifest), tmp_path / "captions", buffer_bytes=1)
    assert not (tmp_path / "captions").exists()


def test_bad_entries_are_copied_and_named_when_read(tmp_path):
    bad = {"aaaaaaaaaa1": {"start": [0, 1], "end": [1], "text": ["a", "b"]},
           "aaaaaaaaaa2": {"start": ["soon"], "end": [1], "text": ["a"]},
           "aaaaaaaaaa3": ["not", "an", "entry"]}
    spec, corpus, manifest = howto(tmp_path, json.dumps(bad), shard_size=5)
    split_captions(corpus, str(manifest), tmp_path / "captions", buffer_bytes=1)
    corpus.open_caption_shard(caption_shard_path(tmp_path / "captions", "00000"), "00000")
    with pytest.raises(CorpusError, match=r"aaaaaaaaaa1 has start/end/text of different lengths \(2/1/2\)"):
        corpus.captions("aaaaaaaaaa1")
    with pytest.raises(CorpusError, match=r"aaaaaaaaaa2: caption 0 has a non-numeric time \(start 'soon'"):
        corpus.captions("aaaaaaaaaa2")
    with pytest.raises(CorpusError, match="aaaaaaaaaa3 lacks start/end/text lists"):
        corpus.captions("aaaaaaaaaa3")


def test_the_cli_takes_its_settings_from_the_plan_and_refuses_corpora_without_a_caption_file(tmp_path, capsys):
    spec, _, manifest = howto(tmp_path, json.dumps({IDS[0]: entry(0)}))
    settings = {"corpus": "howto100m", "spec": spec, "buffer_mb": 1}
    assert cli_main(["split-captions", "--corpus", "howto100m", "--manifest", str(manifest),
                     "--output", str(tmp_path / "out"), "--settings", json.dumps(settings)]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"shard-0000{k}.jsonl" for k in range(3)]
    vtt = {**settings, "spec": {**spec, "caption_format": "vtt"}}
    assert cli_main(["split-captions", "--corpus", "howto100m", "--manifest", str(manifest),
                     "--output", str(tmp_path / "vtt"), "--settings", json.dumps(vtt)]) == 2
    assert "has no caption file to split" in capsys.readouterr().err
    plan = Plan(load_config([REPO / "config.yaml"]))
    assert plan.settings("split_captions", corpus="howto100m")["buffer_mb"] == 64
    assert plan.caption_split_corpora == ["howto100m"]
    with pytest.raises(ConfigError, match="'youcook2' has no caption file to split"):
        plan.settings("split_captions", corpus="youcook2")


# --- memory at two caption-file sizes (issue 18, item 7) ----------------------------------------------

def _rehearsal():
    spec = importlib.util.spec_from_file_location("rehearsal", REPO / "benchmarks/rehearsal.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rehearsal", module)  # its dataclasses look their module up
    spec.loader.exec_module(sys.modules["rehearsal"])
    return sys.modules["rehearsal"]


SHARD_SIZE = 100
RSS_TOLERANCE_MB = 50  # run-to-run noise is ~10 MB; json.load of the larger file alone would add ~400 MB


@pytest.mark.slow
def test_a_text_job_peak_rss_does_not_grow_with_a_10x_larger_caption_file(tmp_path):
    rehearsal = _rehearsal()
    from mcnflow.core.ledger import DOWNLOAD_COLUMNS, write_ledger
    from mcnflow.features.word2vec import WordVectors, write_word_vectors

    words, _ = rehearsal.spoken_words()
    write_word_vectors(tmp_path / "w2v.h5", WordVectors(words, [[float(i % 7), 1.0] for i in range(len(words))],
                                                        {"source": "test"}))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    figures = {}
    for n_videos in (1_000, 10_000):
        root = tmp_path / str(n_videos)
        root.mkdir()
        ids = [f"v{i:010d}" for i in range(n_videos)]
        spec, _, manifest = howto(root, "", ids=ids, shard_size=SHARD_SIZE)
        size = rehearsal.write_caption_json(root / "caption.json", ids)
        shard = "00003"
        rows = ids[int(shard) * SHARD_SIZE:(int(shard) + 1) * SHARD_SIZE]
        write_ledger(root / "download.tsv", [{"video_id": v, "status": "ok"} for v in rows], DOWNLOAD_COLUMNS)
        normalize = rehearsal.write_normalize_ledger(root / "normalize.tsv", rows)
        split = rehearsal.run_job("split", [sys.executable, "-m", "mcnflow", "split-captions", "--corpus", "howto100m",
                                            "--manifest", str(manifest), "--output", str(root / "captions"),
                                            "--settings", json.dumps({"corpus": "howto100m", "spec": spec,
                                                                      "buffer_mb": 8})], root, root, env)
        text_settings = {"corpus": "howto100m", "spec": spec, "max_words": 20, "compression": None}
        text = rehearsal.run_job("text", [sys.executable, "-m", "mcnflow", "extract", "text", "--corpus", "howto100m",
                                          "--manifest", str(manifest), "--shard", shard,
                                          "--download-ledger", str(root / "download.tsv"),
                                          "--captions", str(caption_shard_path(root / "captions", shard)),
                                          "--normalize-ledger", str(normalize), "--word2vec", str(tmp_path / "w2v.h5"),
                                          "--output", str(root / "text.h5"), "--ledger", str(root / "text.tsv"),
                                          "--settings", json.dumps(text_settings)], root, root, env)
        assert [line.split("\t")[1] for line in (root / "text.tsv").read_text().splitlines()[1:]] == ["ok"] * SHARD_SIZE
        figures[n_videos] = {"bytes": size, "split_mb": split.max_rss_mb, "text_mb": text.max_rss_mb}
    small, large = figures[1_000], figures[10_000]
    assert large["bytes"] > 9 * small["bytes"]
    assert large["text_mb"] <= small["text_mb"] + RSS_TOLERANCE_MB, figures
    # the split streams: its memory holds the manifest table and the buffer, not the document
    assert large["split_mb"] <= small["split_mb"] + RSS_TOLERANCE_MB, figures
