import subprocess
import sys

import h5py
import numpy as np
import pytest

from mcnflow.core.atomic import atomic_write, remove_stale_temps
from mcnflow.features.store import (FeatureIndex, IncompleteShardError, ShardReader, ShardWriter, is_complete,
                                    read_vocabulary, write_vocabulary)
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, Journal, journal_path, read_ledger, write_ledger


def test_ledger_roundtrip_keeps_messages_on_one_line(tmp_path):
    path = tmp_path / "shard-00000.tsv"
    write_ledger(path, [{"video_id": "a" * 11, "status": "error", "message": "line1\nline2\tx", "bytes": 3}],
                 DOWNLOAD_COLUMNS)
    rows = read_ledger(path)
    assert rows[0]["message"] == "line1 line2 x" and rows[0]["bytes"] == "3" and rows[0]["path"] == ""


def test_journal_ignores_torn_last_line_and_last_row_wins(tmp_path):
    ledger = tmp_path / "shard-00000.tsv"
    journal = Journal(journal_path(ledger), ("video_id", "status", "message"))
    journal.append({"video_id": "a", "status": "transient", "message": "503"})
    journal.append({"video_id": "a", "status": "ok", "message": ""})
    journal.append({"video_id": "b", "status": "ok", "message": ""})
    with open(journal.path, "a") as handle:  # a writer killed mid-line (the cells count looks right)
        handle.write("c\tok\tpart")
    rows = journal.read()
    assert set(rows) == {"a", "b"} and rows["a"]["status"] == "ok"
    with pytest.raises(RuntimeError, match="lacks outcomes"):
        journal.finish(ledger, ["a", "b", "c"])
    journal = Journal(journal.path, journal.columns)  # the rerun reopens the journal
    journal.append({"video_id": "c", "status": "private", "message": "Private video"})
    assert journal.read()["c"]["status"] == "private"
    final = journal.finish(ledger, ["b", "a", "c"])
    assert [r["video_id"] for r in final] == ["b", "a", "c"]
    assert not journal.path.exists() and ledger.exists()


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("partial")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_only_a_temp_that_is_cleaned(tmp_path):
    code = ("import os,sys; from mcnflow.core.atomic import atomic_write\n"
            f"with atomic_write({str(tmp_path / 'x.txt')!r}) as h:\n h.write('partial'); h.flush(); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert not (tmp_path / "x.txt").exists()
    assert remove_stale_temps(tmp_path) == 1 and list(tmp_path.iterdir()) == []


def test_shard_writer_reader_roundtrip(tmp_path):
    path = tmp_path / "shard-00000.h5"
    with ShardWriter(path, "video", corpus="demo", shard=0, attrs={"fps": 1, "weights": "none"}) as writer:
        writer.add("vid00000001", np.ones((3, 2048), np.float16), attrs={"duration": 3.0})
        writer.mark("vid00000002", "no_media")
    assert is_complete(path)
    reader = ShardReader(path)
    assert reader.attrs["modality"] == "video" and reader.attrs["fps"] == 1
    assert reader.video_ids() == ["vid00000001"]
    assert [r["status"] for r in reader.index()] == ["ok", "no_media"]
    assert reader.read("vid00000001").shape == (3, 2048)
    index = FeatureIndex([path])
    assert "vid00000001" in index and "vid00000002" not in index and index.status["vid00000002"] == "no_media"


def test_text_shard_and_vocabulary(tmp_path):
    path = tmp_path / "text.h5"
    with ShardWriter(path, "text", corpus="demo", shard=0) as writer:
        writer.add("v1", {"token_ids": np.array([0, 1, 1], np.int32), "offsets": np.array([0, 2, 3]),
                          "start": np.array([0.0, 2.0], np.float32), "end": np.array([2.0, 4.0], np.float32)})
    data = ShardReader(path).read("v1")
    assert data["token_ids"].tolist() == [0, 1, 1] and data["offsets"].tolist() == [0, 2, 3]
    vocab = tmp_path / "vocabulary.h5"
    write_vocabulary(vocab, ["chop", "tomato"], np.eye(2, 300), {"source": "train"})
    words, vectors, attrs = read_vocabulary(vocab)
    assert words == ["chop", "tomato"] and vectors.shape == (2, 300) and attrs["source"] == "train"


def test_failed_writer_leaves_no_file_and_incomplete_file_is_rejected(tmp_path):
    path = tmp_path / "shard.h5"
    with pytest.raises(ValueError):
        with ShardWriter(path, "audio", corpus="demo", shard=0) as writer:
            writer.add("v1", np.zeros(5))  # not 2-D
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with h5py.File(path, "w") as handle:  # what a killed writer's file looks like
        handle.attrs["format"] = "mcnflow-features"
        handle.attrs["complete"] = False
    assert not is_complete(path)
    with pytest.raises(IncompleteShardError):
        ShardReader(path).index()
