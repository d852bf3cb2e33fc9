"""ShardRun, the per-shard stage helper: whose leftovers a start removes, fingerprints, parts."""

from __future__ import annotations

import os

import pytest

from mcnflow.core.ledger import FEATURE_COLUMNS, journal_path, read_ledger
from mcnflow.core.shard_stage import ShardRun, remove_own_temps, work_dir_for


def touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_start_removes_this_shards_temporaries_and_no_one_elses(tmp_path):
    ledger, output = tmp_path / "shard-00000.tsv", tmp_path / "shard-00000.h5"
    own = [touch(tmp_path / ".tmp-shard-00000.tsv.k1lled0"), touch(tmp_path / ".tmp-shard-00000.h5.abc_123")]
    own_dir = tmp_path / ".tmp-shard-00000.h5.dir12345"
    touch(own_dir / "inner")
    own_part_temp = touch(work_dir_for(ledger) / ".tmp-vid.npz.zzzz1234")
    # another shard's job is writing beside this one right now; and names that only look alike
    others = [touch(tmp_path / ".tmp-shard-00001.h5.abc_123"), touch(tmp_path / ".tmp-shard-00001.tsv.x"),
              touch(tmp_path / ".tmp-shard-00000.h5x.abc"), touch(tmp_path / ".tmp-shard-00000.h.abc"),
              touch(tmp_path / "shard-00000.h5.abc"), touch(work_dir_for(ledger) / "vid.npz")]

    run = ShardRun(ledger, FEATURE_COLUMNS, outputs=[output])

    assert not any(p.exists() for p in [*own, own_dir, own_part_temp])
    assert all(p.exists() for p in others)
    assert run.earlier == {} and run.resumed == 0


def test_remove_own_temps_takes_names_literally(tmp_path):
    odd = tmp_path / "shard[0]*.h5"
    mine, lookalike = touch(tmp_path / ".tmp-shard[0]*.h5.abc"), touch(tmp_path / ".tmp-shard0x.h5.abc")
    assert remove_own_temps([odd, tmp_path / "missing" / "x.h5"]) == 1
    assert not mine.exists() and lookalike.exists()


def test_rerun_settles_trusted_rows_once_and_finish_cleans_up(tmp_path):
    ledger = tmp_path / "shard-00000.tsv"
    run = ShardRun(ledger, FEATURE_COLUMNS, fingerprint="recipe-1")
    run.record({"video_id": "a", "status": "ok", "message": "", "length": 3})
    part = run.part_path("a")
    touch(part)
    run.record({"video_id": "b", "status": "error", "message": "killed decoder", "length": 0})
    del run  # the job is killed here

    asked = []

    def trust(video_id, row):
        asked.append(video_id)
        return row["status"] == "ok" and part.exists()

    rerun = ShardRun(ledger, FEATURE_COLUMNS, trust=trust, fingerprint="recipe-1")
    assert rerun.settled("a") == {"video_id": "a", "status": "ok", "message": "", "length": "3"}
    assert rerun.settled("a") is not None and rerun.settled("b") is None and rerun.settled("c") is None
    assert asked == ["a", "b"] and rerun.resumed == 1  # one check per video, counted once
    rerun.record({"video_id": "b", "status": "ok", "message": "", "length": 1})
    rerun.record({"video_id": "c", "status": "no_media", "message": "gone", "length": 0})
    assert {vid: row["status"] for vid, row in rerun.rows.items()} == {"a": "ok", "b": "ok", "c": "no_media"}
    rows = rerun.finish(["c", "a", "b"])
    assert [(r["video_id"], r["status"]) for r in rows] == [("c", "no_media"), ("a", "ok"), ("b", "ok")]
    assert read_ledger(ledger) == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-00000.tsv"]  # no journal, no work dir


def test_other_fingerprint_discards_the_earlier_journal_and_parts(tmp_path):
    ledger = tmp_path / "shard-00000.tsv"
    run = ShardRun(ledger, FEATURE_COLUMNS, fingerprint="fps=1")
    run.record({"video_id": "a", "status": "ok", "message": "", "length": 3})
    part = touch(run.part_path("a"))

    same = ShardRun(ledger, FEATURE_COLUMNS, fingerprint="fps=1")
    assert set(same.earlier) == {"a"} and part.exists()

    other = ShardRun(ledger, FEATURE_COLUMNS, fingerprint="fps=2")
    assert other.earlier == {} and not part.exists() and not journal_path(ledger).exists()
    # and the new fingerprint is what the next rerun compares with
    other.record({"video_id": "a", "status": "too_short", "message": "", "length": 0})
    assert set(ShardRun(ledger, FEATURE_COLUMNS, fingerprint="fps=2").earlier) == {"a"}
    assert ShardRun(ledger, FEATURE_COLUMNS, fingerprint="fps=1").earlier == {}


def test_a_journal_without_fingerprint_is_not_trusted_by_a_fingerprinted_stage(tmp_path):
    ledger = tmp_path / "shard-00000.tsv"
    ShardRun(ledger, FEATURE_COLUMNS).record({"video_id": "a", "status": "ok", "message": "", "length": 3})
    assert set(ShardRun(ledger, FEATURE_COLUMNS).earlier) == {"a"}  # stages without one keep working
    assert ShardRun(ledger, FEATURE_COLUMNS, fingerprint="v1").earlier == {}


@pytest.mark.parametrize("video_id", ["../../escape", "a/b", ".hidden", "with space", ""])
def test_part_paths_stay_in_the_work_dir(tmp_path, video_id):
    run = ShardRun(tmp_path / "shard-00000.tsv", FEATURE_COLUMNS)
    path = run.part_path(video_id)
    assert path.parent == run.work_dir and not path.name.startswith(".")
    assert path != run.part_path(video_id + "x")
    assert run.part_path("dQw4w9WgXcQ").name == "dQw4w9WgXcQ.npz"
    assert os.path.commonpath([path.resolve(), run.work_dir.resolve()]) == str(run.work_dir.resolve())
