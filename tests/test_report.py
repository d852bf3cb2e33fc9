"""``mcnflow summarize`` writes the csv, the markdown report and the plots from small inputs."""

import csv
import json

import pytest

from mcnflow.cli import main as cli_main

SETTINGS = json.dumps({"statistics": {"reference": "tv", "confidence": 0.95, "resamples": 999, "seed": 0},
                       "benchmarks": {"youcook2_retrieval": {"task": "retrieval", "corpus": "youcook2",
                                                             "reader": "youcook2"}}})


def _result(path, experiment, pairs, benchmark, task, metrics, n_queries, n_missing, note=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "experiment": experiment, "pairs": pairs, "space": "shared", "benchmark": benchmark, "task": task,
        "metrics": metrics, "n_queries": n_queries, "n_missing": n_missing,
        "scoring": "t.v" if metrics else "none", "tie_policy": "average", "note": note}))
    return path


@pytest.fixture
def inputs(tmp_path):
    eval_dir = tmp_path / "results" / "eval"
    metrics = [
        _result(eval_dir / "tv" / "youcook2_retrieval.json", "tv", ["tv"], "youcook2_retrieval", "retrieval",
                {"recall_at_1": 10.0, "recall_at_5": 30.0, "recall_at_10": 40.0, "median_rank": 20.0,
                 "mean_rank": 50.5}, 200, 4),
        _result(eval_dir / "tv" / "youcook2_localization.json", "tv", ["tv"], "youcook2_localization",
                "localization", {"mean_iou": 22.0, "recall_at_iou_0.3": 30.0, "recall_at_iou_0.5": 15.0}, 200, 0),
        _result(eval_dir / "va" / "youcook2_retrieval.json", "va", ["va"], "youcook2_retrieval", "retrieval",
                {}, 200, 0, note="text branch not trained"),
    ]
    logs = []
    for experiment, losses in (("tv", [3.0, 2.5, 2.0]), ("va", [4.0, 3.0, 2.9])):
        log = tmp_path / "results" / "train" / experiment / "log.tsv"
        log.parent.mkdir(parents=True)
        # the trainer's columns: per-step rows, then the epoch's mean row
        rows = ["kind\tepoch\tstep\tlr\ttotal\tmms\tclustering\treconstruction\tkmeans_fits\tseconds"]
        rows += [f"step\t1\t{i + 1}\t1e-4\t{v}\t{v / 2}\t{v / 4}\t{v / 4}\t0\t0.1" for i, v in enumerate(losses)]
        rows += [f"epoch\t1\t{len(losses)}\t1e-4\t{sum(losses) / 3}\t0\t0\t0\t0\t0.3"]
        log.write_text("\n".join(rows) + "\n")
        logs.append(log)
    survival = tmp_path / "results" / "download" / "howto100m" / "survival.tsv"
    survival.parent.mkdir(parents=True)
    survival.write_text("status\tvideos\tpercent\nok\t90\t90.0\nunavailable\t10\t10.0\n")
    return tmp_path, metrics, logs, survival


def test_summarize_writes_table_report_and_plots(inputs, capsys):
    tmp_path, metrics, logs, survival = inputs
    out = tmp_path / "results"
    code = cli_main(["summarize", "--metrics", *map(str, metrics), "--train-logs", *map(str, logs),
                     "--survival", str(survival), "--out-dir", str(out), "--settings", SETTINGS])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out / "summary.csv") in printed and str(out / "summary.md") in printed

    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["experiment"], r["benchmark"]) for r in rows] == [
        ("tv", "youcook2_localization"), ("tv", "youcook2_retrieval"), ("va", "youcook2_retrieval")]
    tv_retrieval = rows[1]
    assert tv_retrieval["pairs"] == "tv" and tv_retrieval["space"] == "shared"
    assert float(tv_retrieval["recall_at_5"]) == 30.0 and tv_retrieval["mean_iou"] == ""
    assert tv_retrieval["n_queries"] == "200" and tv_retrieval["n_missing"] == "4"
    assert rows[2]["recall_at_1"] == "" and rows[2]["note"] == "text branch not trained"
    assert float(rows[0]["recall_at_iou_0.5"]) == 15.0

    report = (out / "summary.md").read_text()
    assert "## youcook2_retrieval (retrieval)" in report
    assert "| tv |  | tv | shared | t.v | 10.00 | 30.00 | 40.00 | 20.00 | 50.50 | 200 | 4 |" in report
    # MCN's published numbers stand beside the reproduction, labelled with their source
    assert "| MCN published (Chen et al., ICCV 2021; YouCook2 leaderboard" in report and "18.10" in report
    assert "R@1 = 0.50%, R@5 = 2.50%, R@10 = 5.00%" in report   # chance = K / 200
    assert "text branch not trained" in report
    assert "| unavailable | 10 | 10.0 |" in report

    plots = out / "plots"
    expected = ["recall_at_1", "recall_at_5", "recall_at_10", "median_rank", "mean_rank", "mean_iou",
                "recall_at_iou_0.3", "recall_at_iou_0.5", "training_loss"]
    for name in expected:
        png = plots / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(out.glob(".tmp-*")) and not list(plots.glob(".tmp-*"))


def test_training_log_is_read_by_step_or_epoch(inputs, tmp_path):
    from mcnflow.report import read_training_log
    curve = read_training_log(inputs[2][0])
    assert curve["x"] == "step" and curve["xs"] == [1.0, 2.0, 3.0] and curve["total"] == [3.0, 2.5, 2.0]
    assert curve["epoch_xs"] == [3.0] and curve["epoch_total"] == [pytest.approx(2.5)]
    log = tmp_path / "log.tsv"
    log.write_text("epoch\ttotal\tmms\n0\t2.0\t1.0\n1\t\t\n2\t1.5\t0.7\n")
    curve = read_training_log(log)
    assert curve["x"] == "epoch" and curve["xs"] == [0.0, 2.0] and curve["total"] == [2.0, 1.5]
    log.write_text("when\tvalue\n1\t2\n")
    with pytest.raises(ValueError, match="total"):
        read_training_log(log)


def test_a_file_that_is_not_a_result_is_refused(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"experiment": "tv"}')
    with pytest.raises(ValueError, match="missing benchmark, metrics"):
        cli_main(["summarize", "--metrics", str(bad), "--out-dir", str(tmp_path / "out"), "--settings", SETTINGS])


def test_statistics_over_seeds_and_queries(tmp_path):
    """Two experiments x two seeds on the same 30 queries: mean +- std over seeds, the bootstrap CI of
    the seed-pooled per-query values, and the paired test against the reference, as scipy computes them."""
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(0)
    keys = [f"q{i}" for i in range(30)]
    hits = {("tv", 1): rng.random(30) < 0.3, ("tv", 2): rng.random(30) < 0.3,
            ("tv_ta", 1): rng.random(30) < 0.8, ("tv_ta", 2): rng.random(30) < 0.8}
    paths = []
    for (experiment, seed), hit in hits.items():
        values = (hit * 100.0).tolist()
        record = {"experiment": experiment, "seed": seed, "pairs": ["tv"], "space": "shared",
                  "benchmark": "youcook2_retrieval", "task": "retrieval", "scoring": "t.v",
                  "metrics": {"recall_at_10": float(np.mean(values))}, "n_queries": 30, "n_missing": 0,
                  "per_query": {"keys": keys, "values": {"recall_at_10": values}, "aggregate": {"recall_at_10": "mean"}}}
        path = tmp_path / "eval" / experiment / f"seed-{seed}" / "youcook2_retrieval.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record))
        paths.append(path)
    out = tmp_path / "out"
    assert cli_main(["summarize", "--metrics", *map(str, paths), "--out-dir", str(out), "--settings", SETTINGS]) == 0
    with open(out / "statistics.csv", newline="") as handle:
        rows = {r["experiment"]: r for r in csv.DictReader(handle)}
    per_seed = [hits[("tv_ta", s)].mean() * 100 for s in (1, 2)]
    row = rows["tv_ta"]
    assert float(row["mean"]) == pytest.approx(np.mean(per_seed))
    assert float(row["std"]) == pytest.approx(np.std(per_seed, ddof=1))
    pooled = (hits[("tv_ta", 1)] * 100.0 + hits[("tv_ta", 2)] * 100.0) / 2
    ci = stats.bootstrap((pooled,), np.mean, n_resamples=999, method="percentile",
                         rng=np.random.default_rng(0)).confidence_interval
    assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((ci.low, ci.high))
    reference = (hits[("tv", 1)] * 100.0 + hits[("tv", 2)] * 100.0) / 2
    assert float(row["difference"]) == pytest.approx(pooled.mean() - reference.mean())
    assert row["reference"] == "tv" and float(row["p_value"]) < 0.01
    assert rows["tv"]["reference"] == "" and rows["tv"]["p_value"] == ""
    report = (out / "summary.md").read_text()
    assert "# Across seeds" in report and " ± " in report and "(p=" in report
