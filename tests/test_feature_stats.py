import pytest

from mcnflow.cli import main
from mcnflow.core.ledger import FEATURE_COLUMNS, read_ledger, write_ledger


def test_feature_stats_counts_per_modality_and_status(tmp_path):
    video = tmp_path / "video" / "shard-00000.tsv"
    audio = tmp_path / "audio" / "shard-00000.tsv"
    video.parent.mkdir()
    audio.parent.mkdir()
    write_ledger(video, [{"video_id": "a", "status": "ok", "length": 8},
                         {"video_id": "b", "status": "ok", "length": 4},
                         {"video_id": "c", "status": "no_media", "length": 0}], FEATURE_COLUMNS)
    write_ledger(audio, [{"video_id": "a", "status": "ok", "length": 801},
                         {"video_id": "b", "status": "no_audio", "length": 0}], FEATURE_COLUMNS)
    out = tmp_path / "stats.tsv"
    assert main(["feature-stats", "--corpus", "demo", "--ledgers", str(video), str(audio), "--output", str(out)]) == 0
    rows = {(r["modality"], r["status"]): r for r in read_ledger(out)}
    assert rows["video", "ok"]["videos"] == "2" and rows["video", "ok"]["length"] == "12"
    assert rows["video", "no_media"]["videos"] == "1"
    assert rows["audio", "no_audio"]["videos"] == "1" and rows["audio", "ok"]["length"] == "801"


def test_unknown_status_is_named(tmp_path):
    ledger = tmp_path / "text" / "shard-00000.tsv"
    ledger.parent.mkdir()
    write_ledger(ledger, [{"video_id": "a", "status": "weird", "length": 1}], FEATURE_COLUMNS)
    from mcnflow.features.stats import feature_stats

    with pytest.raises(ValueError, match="weird.*'a'"):
        feature_stats("demo", [str(ledger)])
