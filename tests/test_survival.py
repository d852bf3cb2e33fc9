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


def test_outcomes_separate_gone_blocked_not_yet_and_never_tried(tmp_path, capsys):
    from mcnflow.core.status import DOWNLOAD_OUTCOMES, DownloadOutcome, DownloadStatus

    rows = [("a", "ok", 1), ("b", "unavailable", 1), ("c", "removed", 1), ("d", "blocked", 1),
            ("e", "blocked", 0), ("f", "rate_limited", 0), ("g", "not_yet", 1), ("h", "transient", 3),
            ("i", "given_up", 12), ("j", "error", 0)]
    path = tmp_path / "shard-00000.tsv"
    write_ledger(path, [{"video_id": v, "status": s, "attempts": n} for v, s, n in rows], DOWNLOAD_COLUMNS)
    out = tmp_path / "survival.tsv"
    assert cli.main(["survival", "--ledgers", str(path), "--corpus", "howto100m", "--output", str(out)]) == 0
    table = read(out)
    assert list(table) == [*DOWNLOAD_STATUSES, "total", "survival"]  # every status, zeros included
    assert {s: table[s]["outcome"] for s in DOWNLOAD_STATUSES} == {s: DOWNLOAD_OUTCOMES[DownloadStatus(s)].value
                                                                   for s in DOWNLOAD_STATUSES}
    assert table["unavailable"]["outcome"] == table["removed"]["outcome"] == "gone"
    assert table["blocked"]["outcome"] == table["rate_limited"]["outcome"] == "blocked"
    assert table["not_yet"]["outcome"] == "not_yet" and table["not_yet"]["videos"] == "1"
    assert (table["blocked"]["videos"], table["blocked"]["never_tried"]) == ("2", "1")
    assert (table["rate_limited"]["never_tried"], table["total"]["never_tried"]) == ("1", "3")
    # given up: an outcome of its own, never counted as gone
    assert (table["given_up"]["outcome"], table["given_up"]["videos"]) == ("given_up", "1")
    assert table["private"]["videos"] == "0" and table["private"]["never_tried"] == "0"
    printed = capsys.readouterr().out
    by_outcome = printed.split("by outcome:", 1)[1]
    lines = {line.split()[0]: line for line in by_outcome.splitlines() if line.split()}
    assert "unavailable 1, removed 1" in lines["gone"]
    # the outcome lines partition the corpus: tried and blocked, never tried, ...
    counts = {name: int(line.split()[1]) for name, line in lines.items() if name in [o.value for o in DownloadOutcome]}
    assert counts == {"survived": 1, "gone": 2, "blocked": 1, "not_yet": 1, "never_tried": 3, "failed": 1,
                      "given_up": 1, "skipped": 0}
    assert "(blocked 1)" in lines["blocked"] and "rate_limited 1, blocked 1, error 1" in lines["never_tried"]
    assert "BLOCK" in printed and "lower bound" in printed


def test_summarize_draws_the_survival_chart(tmp_path):
    import numpy as np
    from matplotlib.image import imread

    tables = []
    for corpus, statuses in (("howto100m", {**{f"ok{i}": "ok" for i in range(75)},
                                            **{f"gone{i}": "unavailable" for i in range(25)}}),
                             ("youcook2", {"a": "ok", "b": "blocked", "c": "not_yet", "d": "given_up"})):
        ledger_path = ledger(tmp_path / f"{corpus}.tsv", statuses)
        out = tmp_path / "results" / "download" / corpus / "survival.tsv"
        out.parent.mkdir(parents=True)
        assert cli.main(["survival", "--ledgers", str(ledger_path), "--corpus", corpus, "--output", str(out)]) == 0
        tables.append(out)
    chart = tmp_path / "chart.png"
    settings = ["--settings", '{"statistics": {}, "benchmarks": {}}']
    assert cli.main(["summarize", "--survival", *map(str, tables), "--out-dir", str(tmp_path / "results"),
                     "--survival-chart", str(chart), *settings]) == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = (imread(chart)[..., :3] * 255).round().astype(int)

    def count(hex_color):
        rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - rgb).max(axis=-1) <= 2).sum())

    survived, unavailable, blocked, not_yet, given_up = (count(c) for c in ("#2e7d32", "#c62828", "#5e35b1",
                                                                            "#1e88e5", "#ff8f00"))
    assert blocked and not_yet and given_up  # youcook2's bar has them
    # the bars are shares: howto100m is 75 % survived to 25 % gone (plus youcook2's third survived)
    assert 2.5 < survived / unavailable < 5.0
    # without --survival-chart it goes next to the other plots
    assert cli.main(["summarize", "--survival", str(tables[0]), "--out-dir", str(tmp_path / "results"),
                     *settings]) == 0
    assert (tmp_path / "results" / "plots" / "download_survival.png").exists()
