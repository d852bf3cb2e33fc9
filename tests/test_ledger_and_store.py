import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mcnflow.core.atomic import atomic_write, remove_stale_temps
from mcnflow.features.store import (FeatureIndex, IncompleteShardError, ShardReader, ShardWriter, assemble_shard,
                                    is_complete, part_problems, parts_fingerprint, read_part, source_identity,
                                    write_part)
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


def test_text_shard_and_its_word_table(tmp_path):
    path = tmp_path / "text.h5"
    with ShardWriter(path, "text", corpus="demo", shard=0) as writer:
        writer.add("v1", {"token_ids": np.array([0, 1, 1], np.int32), "offsets": np.array([0, 2, 3]),
                          "start": np.array([0.0, 2.0], np.float32), "end": np.array([2.0, 4.0], np.float32)})
        writer.add_word_table(["chop", "tomato"], np.eye(2, 300))
    reader = ShardReader(path)
    data = reader.read("v1")
    assert data["token_ids"].tolist() == [0, 1, 1] and data["offsets"].tolist() == [0, 2, 3]
    words, vectors = reader.word_table()
    assert words == ["chop", "tomato"] and vectors.shape == (2, 300) and vectors.dtype == np.float32


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


def test_is_complete_accepts_a_finished_shard_and_rejects_a_killed_one(tmp_path):
    path = tmp_path / "shard-00000.h5"
    with ShardWriter(path, "audio", corpus="demo", shard=0) as writer:
        writer.mark("v1", "no_audio")
    assert is_complete(path)
    with h5py.File(path, "r+") as handle:  # as a killed writer would have left it
        handle.attrs["complete"] = False
    assert not is_complete(path) and not is_complete(tmp_path / "missing.h5")


VIDEO_ATTRS = {"duration": 2.5, "n_frames": 3, "source_checksum": "ab" * 32, "source": "v.mp4",
               "pretrained": False, "nothing": None, "shape": [3, 2048], "mean": np.array([0.4, 0.5, 0.6])}


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_shard_assembled_from_parts_equals_one_written_directly(tmp_path, compression):
    from shard_utils import h5_contents

    rng = np.random.default_rng(0)
    red, blue = rng.standard_normal((3, 2048)).astype(np.float16), rng.standard_normal((1, 2048)).astype(np.float16)
    root = {"fps": 1, "weights": "none", "preprocess_mean": np.array([0.485, 0.456, 0.406])}
    direct = tmp_path / "direct" / "shard-00002.h5"
    with ShardWriter(direct, "video", "demo", 2, root, compression=compression) as writer:
        writer.add("red", red, VIDEO_ATTRS)
        writer.mark("gone", "no_media")
        writer.add("blue", blue, {"duration": 1.0})
    parts = tmp_path / "parts"
    write_part(parts / "red.npz", red, VIDEO_ATTRS, meta={"fingerprint": "f"})
    write_part(parts / "blue.npz", blue, {"duration": 1.0}, meta={"fingerprint": "f"})
    assembled = assemble_shard(tmp_path / "assembled" / "shard-00002.h5", "video", "demo", 2,
                               [("red", "ok", parts / "red.npz"), ("gone", "no_media", None),
                                ("blue", "ok", parts / "blue.npz")], attrs=root, compression=compression)
    assert is_complete(assembled)
    assert h5_contents(assembled) == h5_contents(direct)
    assert list((tmp_path / "assembled").iterdir()) == [assembled]  # no temporary left


def test_part_roundtrip_and_text_parts(tmp_path):
    part = read_part(write_part(tmp_path / "v.npz", np.arange(6, dtype=np.float16).reshape(2, 3), VIDEO_ATTRS,
                                meta={"fingerprint": "abc", "source_size": 7}))
    assert part.data.dtype == np.float16 and part.data.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert part.attrs["n_frames"] == 3 and isinstance(part.attrs["n_frames"], int)
    assert part.attrs["source"] == "v.mp4" and isinstance(part.attrs["source"], str)
    assert part.attrs["nothing"] == "null" and part.attrs["shape"] == "[3, 2048]"  # as HDF5 stores them
    assert part.attrs["mean"].tolist() == [0.4, 0.5, 0.6] and part.meta == {"fingerprint": "abc", "source_size": 7}
    text = {"token_ids": np.array([0, 1], np.int32), "offsets": np.array([0, 2]),
            "start": np.array([0.5], np.float32), "end": np.array([1.5], np.float32)}
    loaded = read_part(write_part(tmp_path / "t.npz", text))
    assert sorted(loaded.data) == sorted(text) and loaded.data["token_ids"].dtype == np.int32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz", "v.npz"]


def test_part_problems_name_what_cannot_be_trusted(tmp_path):
    source = tmp_path / "v.mp4"
    source.write_bytes(b"video")
    part = write_part(tmp_path / "v.npz", np.zeros((40, 7), np.float16),
                      meta={"fingerprint": "f1", **source_identity(source)})
    assert part_problems(part, "audio", fingerprint="f1", source=source, length="7") == []
    assert "other settings" in part_problems(part, "audio", fingerprint="f2", source=source)[0]
    assert "holds 40 entries" in part_problems(part, "video", fingerprint="f1", length=7)[0]
    os.utime(source, ns=(1, 1))
    assert "changed" in part_problems(part, "audio", fingerprint="f1", source=source)[0]
    assert "missing" in part_problems(tmp_path / "other.npz", "audio", fingerprint="f1")[0]
    part.write_bytes(part.read_bytes()[:-40])  # damaged on disk
    assert "unreadable" in part_problems(part, "audio", fingerprint="f1")[0]


def test_parts_fingerprint_follows_settings_and_inputs():
    rows = [{"video_id": "a", "status": "ok", "path": "/x/a.mp4"}]
    base = parts_fingerprint("audio", {"hop_ms": 10, "mean": np.array([1.0])}, rows)
    assert base == parts_fingerprint("audio", {"mean": np.array([1.0]), "hop_ms": 10}, [dict(rows[0])])
    assert base != parts_fingerprint("audio", {"hop_ms": 20, "mean": np.array([1.0])}, rows)
    assert base != parts_fingerprint("audio", {"hop_ms": 10, "mean": np.array([2.0])}, rows)
    assert base != parts_fingerprint("audio", {"hop_ms": 10, "mean": np.array([1.0])}, [{**rows[0], "path": "/y"}])
    assert base != parts_fingerprint("video", {"hop_ms": 10, "mean": np.array([1.0])}, rows)
