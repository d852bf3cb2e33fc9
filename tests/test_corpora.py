import json
import math

import pytest

from mcnflow.corpora import CorpusError, open_corpus
from mcnflow.core.ids import InvalidVideoId, is_valid_video_id, validate_video_id
from mcnflow.caption_split import split_captions
from mcnflow.manifest import build_manifest, read_manifest
from mcnflow.core.shards import shard_count, shard_names


def test_youtube_and_local_id_rules():
    assert is_valid_video_id("nVbIUDjzWY4")
    assert is_valid_video_id("a-b_c123456")
    for bad in ["short", "nVbIUDjzWY4x", "../etc/pass", "abc def ghi", "$(rm -rf /)", ""]:
        assert not is_valid_video_id(bad)
    assert is_valid_video_id("video9770", "local")
    for bad in ["../video1", ".hidden", "a/b", "x;y", "-rf"]:
        assert not is_valid_video_id(bad, "local")
    with pytest.raises(InvalidVideoId, match="nVbIUDjzWY"):
        validate_video_id("nVbIUDjzWY", "youtube")


def test_howto100m_reader_real_format(tmp_path):
    (tmp_path / "HowTo100M_v1.csv").write_text(
        "video_id,category_1,category_2,rank,task_id\n"
        "nVbIUDjzWY4,Cars & Other Vehicles,Motorcycles,27,52907\n"
        "bad id!!,Food and Entertaining,Recipes,1,1\n"
        "nVbIUDjzWY4,Cars & Other Vehicles,Motorcycles,27,52907\n"
        "0ZNwwuvS3bs,Food and Entertaining,Drinks,3,11967\n")
    captions = {"nVbIUDjzWY4": {"start": [0.0, 4.5], "end": [4.5, 9.0], "text": ["hi there", "now the bike"]}}
    (tmp_path / "caption.json").write_text(json.dumps(captions))
    spec = {"reader": "howto100m", "videos_csv": "HowTo100M_v1.csv", "captions": "caption.json",
            "source": "url", "url_template": "https://www.youtube.com/watch?v={video_id}", "id_kind": "youtube"}
    corpus = open_corpus("howto100m", spec, base_dir=str(tmp_path))
    assert corpus.video_ids() == ["nVbIUDjzWY4", "0ZNwwuvS3bs"]
    assert corpus.rejected == [("bad id!!", "not a valid youtube video id")]
    assert corpus.source("nVbIUDjzWY4") == "https://www.youtube.com/watch?v=nVbIUDjzWY4"
    # caption.json is streamed entry by entry (the split reads it once), never loaded whole
    assert list(corpus.caption_entries()) == list(captions.items())
    # captions come from the video's shard file, which the split makes from caption.json
    with pytest.raises(CorpusError, match="captions are read per shard"):
        corpus.captions("nVbIUDjzWY4")
    manifest = tmp_path / "manifest.tsv"
    write_manifest_rows(manifest, build_manifest(corpus, 1))
    split_captions(corpus, str(manifest), tmp_path / "captions", buffer_bytes=1)
    corpus.open_caption_shard(tmp_path / "captions" / "shard-00000.jsonl", "00000")
    caps = corpus.captions("nVbIUDjzWY4")
    assert [(c.start, c.end, c.text) for c in caps] == [(0.0, 4.5, "hi there"), (4.5, 9.0, "now the bike")]
    corpus.open_caption_shard(tmp_path / "captions" / "shard-00001.jsonl", "00001")
    assert corpus.captions("0ZNwwuvS3bs") == []  # caption.json has no entry for it
    with pytest.raises(CorpusError, match="is for shard '00001', not '00000'"):
        corpus.open_caption_shard(tmp_path / "captions" / "shard-00001.jsonl", "00000")


def write_manifest_rows(path, rows):
    path.write_text("video_id\tshard\tsource\n" + "".join(f"{r['video_id']}\t{r['shard']}\t{r['source']}\n" for r in rows))
    return path


def test_howto100m_missing_column_is_clear(tmp_path):
    (tmp_path / "v.csv").write_text("video_id,rank\nnVbIUDjzWY4,1\n")
    spec = {"reader": "howto100m", "videos_csv": "v.csv", "captions": "c.json", "source": "url",
            "url_template": "{video_id}"}
    with pytest.raises(CorpusError, match="missing column"):
        open_corpus("h", spec, base_dir=str(tmp_path)).video_ids()


def test_youcook2_reader_real_format(tmp_path):
    data = {"database": {
        "GLd3aX16zBg": {"duration": 241.62, "subset": "validation", "recipe_type": "113",
                        "video_url": "https://www.youtube.com/watch?v=GLd3aX16zBg",
                        "annotations": [{"segment": [90, 102], "id": 0, "sentence": "spread margarine on two slices of white bread"},
                                        {"segment": [114, 127], "id": 1, "sentence": "place a slice of cheese on the bread"}]},
        "xHr8X2Wpmno": {"duration": 138.0, "subset": "training", "recipe_type": "113", "video_url": "",
                        "annotations": [{"segment": [5, 10], "id": 0, "sentence": "cut"}]}}}
    (tmp_path / "yc.json").write_text(json.dumps(data))
    spec = {"reader": "youcook2", "annotations": "yc.json", "subset": "validation", "source": "url",
            "url_template": "https://www.youtube.com/watch?v={video_id}"}
    corpus = open_corpus("youcook2", spec, base_dir=str(tmp_path))
    assert corpus.video_ids() == ["GLd3aX16zBg"]
    segments = corpus.segments()
    assert [(s.video_id, s.start, s.end, s.segment_id) for s in segments] == [
        ("GLd3aX16zBg", 90.0, 102.0, "GLd3aX16zBg_0"), ("GLd3aX16zBg", 114.0, 127.0, "GLd3aX16zBg_1")]
    assert corpus.captions("GLd3aX16zBg")[1].text == "place a slice of cheese on the bread"
    assert corpus.duration("GLd3aX16zBg") == pytest.approx(241.62)


def test_msrvtt_reader_on_the_real_split(msrvtt_csv):
    spec = {"reader": "msrvtt", "csv": str(msrvtt_csv), "source": "local", "video_dir": "/data/msrvtt",
            "video_ext": "mp4", "id_kind": "local"}
    corpus = open_corpus("msrvtt", spec)
    ids = corpus.video_ids()
    assert len(ids) == 1000 and ids[0] == "video9770"
    segments = corpus.segments()
    assert len(segments) == 1000
    assert segments[0].sentence == "a person is connecting something to system"
    assert segments[0].start == 0.0 and math.isinf(segments[0].end)
    assert corpus.source("video9770") == "/data/msrvtt/video9770.mp4"
    manifest = build_manifest(corpus, shard_size=300)
    assert [r["shard"] for r in manifest[:1] + manifest[-1:]] == ["00000", "00003"]
    assert shard_names(len(ids), 300) == ["00000", "00001", "00002", "00003"]


def test_unknown_reader():
    with pytest.raises(CorpusError, match="allowed values: howto100m, youcook2, msrvtt"):
        open_corpus("x", {"reader": "kinetics", "source": "url"})


def test_shards_are_stable_and_cover_everything():
    assert shard_count(0, 1000) == 1
    assert shard_count(1000, 1000) == 1
    assert shard_count(1001, 1000) == 2
    assert shard_count(1_200_000, 1000) == 1200


def test_manifest_cli_roundtrip(tmp_path, msrvtt_csv):
    from mcnflow.cli import main

    spec = {"reader": "msrvtt", "csv": str(msrvtt_csv), "source": "local", "video_dir": "v", "id_kind": "local",
            "limit": 10}
    out = tmp_path / "manifest.tsv"
    settings = {"corpus": "msrvtt", "spec": spec, "shard_size": 4}
    assert main(["manifest", "--corpus", "msrvtt", "--settings", json.dumps(settings), "--output", str(out)]) == 0
    rows = read_manifest(str(out))
    assert len(rows) == 10
    assert [r["video_id"] for r in read_manifest(str(out), shard="00002")] == ["video9778", "video9779"]


def test_manifest_settings_are_checked_against_the_schema(tmp_path, msrvtt_csv, capsys):
    from mcnflow.cli import main

    spec = {"reader": "msrvtt", "csv": str(msrvtt_csv), "source": "ftp", "video_dir": "v"}
    settings = {"corpus": "msrvtt", "spec": spec, "shard_size": 4}
    assert main(["manifest", "--corpus", "msrvtt", "--settings", json.dumps(settings),
                 "--output", str(tmp_path / "m.tsv")]) == 2
    assert "settings key 'spec.source': 'ftp' is not allowed; allowed values: 'url', 'local'" in capsys.readouterr().err


SRT = ("\ufeff1\r\n00:00:10,294 --> 00:00:11,095\r\nadd_oil\r\n\r\n"
       "3\r\n00:01:02,300 --> 00:01:05,090\r\nadd_powder_turmeric \r\n\r\n"
       "2\r\n00:00:12,300 --> 00:00:15,090\r\nadd_chilis_green\r\n")


def test_mining_youtube_reader_real_format(tmp_path):
    """The release's test/: videos_test.txt and annotations/<id>.srt (UTF-8 with BOM, CRLF, as shipped)."""
    (tmp_path / "videos_test.txt").write_text("X7NlnFZXsy8\n-2TGG1WFF3A\n\nX7NlnFZXsy8\nbad id")
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "X7NlnFZXsy8.srt").write_bytes(SRT.encode("utf-8"))
    spec = {"reader": "mining_youtube", "videos": "videos_test.txt", "annotations": "annotations", "source": "url",
            "url_template": "https://www.youtube.com/watch?v={video_id}"}
    corpus = open_corpus("mining_youtube", spec, base_dir=str(tmp_path))
    assert corpus.video_ids() == ["X7NlnFZXsy8", "-2TGG1WFF3A"]
    assert corpus.rejected == [("bad id", "not a valid youtube video id")]
    steps = corpus.steps("X7NlnFZXsy8")
    # sorted by start time; labels as sentences
    assert [(s.label, s.start, s.end) for s in steps] == [
        ("add_oil", 10.294, 11.095), ("add_chilis_green", 12.3, 15.09), ("add_powder_turmeric", 62.3, 65.09)]
    assert [c.text for c in corpus.captions("X7NlnFZXsy8")] == ["add oil", "add chilis green", "add powder turmeric"]
    assert corpus.evaluation_files() == {"videos": str(tmp_path / "videos_test.txt"), "annotations": str(annotations)}
    with pytest.raises(CorpusError, match="annotation: file not found"):
        corpus.steps("-2TGG1WFF3A")


@pytest.mark.parametrize("text, message", [
    ("one\n00:00:01,000 --> 00:00:02,000\nadd_oil\n", "line 1: expected a subtitle number"),
    ("1\n00:00:01 --> 00:00:02\nadd_oil\n", "line 2: expected 'HH:MM:SS,mmm --> HH:MM:SS,mmm'"),
    ("1\n00:00:01,000 --> 00:00:02,000\n\n", "subtitle without a label"),
    ("1\n00:00:05,000 --> 00:00:02,000\nadd_oil\n", "ends"),
])
def test_mining_youtube_malformed_annotations_name_the_line(tmp_path, text, message):
    from mcnflow.corpora.mining_youtube import read_srt

    (tmp_path / "v.srt").write_text(text)
    with pytest.raises(CorpusError, match=message):
        read_srt(tmp_path / "v.srt")


def test_mining_youtube_corpus_in_the_config_needs_its_files(repo_root):
    from mcnflow.core.config import ConfigError, load_config

    corpus = {"reader": "mining_youtube", "videos": "v.txt", "source": "url", "url_template": "x/{video_id}"}
    with pytest.raises(ConfigError, match="annotations"):
        load_config([repo_root / "config.yaml"], overrides={"corpora": {"mining_youtube": corpus}})
    config = load_config([repo_root / "config.yaml"],
                         overrides={"corpora": {"mining_youtube": {**corpus, "annotations": "a/"}}})
    from mcnflow.core.plan import Plan
    assert Plan(config).id_file("mining_youtube") == "v.txt"
