"""`mcnflow survival`: counts per status over a corpus's download ledgers."""

import csv

import pytest

from mcnflow import cli
from mcnflow.core.ledger import DOWNLOAD_COLUMNS, DOWNLOAD_STATUSES, write_ledger


def ledger(path, statuses: dict[str, str]):
    write_ledger(path, [{"video_id": vid, "status": status, "attempts": 1} for vid, status in statuses.items()],
                 DOWNLOAD_COLUMNS)
    return path


def read(path):
    with open(path, newline="") as handle:
        return {row["status"]: row for row in csv.DictReader(handle, delimiter="\t")}


def test_counts_every_status_total_and_survival(tmp_path, capsys):
    one = ledger(tmp_path / "shard-00000.tsv", {"a": "ok", "b": "ok", "c": "unavailable", "d": "private"})
    two = ledger(tmp_path / "shard-00001.tsv", {"e": "ok", "f": "rate_limited", "g": "removed", "h": "ok"})
    out = tmp_path / "survival.tsv"
    assert cli.main(["survival", "--ledgers", str(one), str(two), "--corpus", "howto100m", "--output", str(out)]) == 0
    table = read(out)
    assert list(table) == [*DOWNLOAD_STATUSES, "total", "survival"]
    assert {s: int(r["videos"]) for s, r in table.items()} == {
        **{s: 0 for s in DOWNLOAD_STATUSES}, "ok": 4, "unavailable": 1, "private": 1, "removed": 1,
        "rate_limited": 1, "total": 8, "survival": 4}
    assert float(table["survival"]["percent"]) == pytest.approx(50.0)
    assert float(table["unavailable"]["percent"]) == pytest.approx(12.5)
    assert float(table["geo_blocked"]["percent"]) == 0.0
    assert {r["corpus"] for r in table.values()} == {"howto100m"}
    printed = capsys.readouterr().out
    assert "survival" in printed and "50.00%" in printed and "lower bound" in printed


def test_empty_corpus_has_no_survival_figure(tmp_path):
    empty = ledger(tmp_path / "shard-00000.tsv", {})
    out = tmp_path / "survival.tsv"
    assert cli.main(["survival", "--ledgers", str(empty), "--corpus", "x", "--output", str(out)]) == 0
    table = read(out)
    assert table["total"]["videos"] == "0" and table["survival"]["percent"] == ""


def test_unknown_status_and_overlapping_shards_are_errors(tmp_path, caplog):
    bad = ledger(tmp_path / "bad.tsv", {"a": "ok"})
    bad.write_text(bad.read_text().replace("\tok\t", "\tgone\t"))
    out = tmp_path / "survival.tsv"
    assert cli.main(["survival", "--ledgers", str(bad), "--corpus", "x", "--output", str(out)]) == 1
    assert "unknown status 'gone'" in caplog.text
    one = ledger(tmp_path / "one.tsv", {"a": "ok"})
    two = ledger(tmp_path / "two.tsv", {"a": "ok"})
    assert cli.main(["survival", "--ledgers", str(one), str(two), "--corpus", "x", "--output", str(out)]) == 1
    assert "shards overlap" in caplog.text
    assert not out.exists()
