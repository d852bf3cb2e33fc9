"""``mcnflow summarize`` writes the csv, the markdown report and the plots from small inputs."""

import csv
import json

import numpy as np
import pytest

from mcnflow.cli import main as cli_main
from mcnflow.statistics import BOTH_TESTS

def _settings(**statistics):
    """The summarize stage's settings JSON: tv the reference, 999 resamples, ``statistics`` on top."""
    return json.dumps({"statistics": {"reference": "tv", "confidence": 0.95, "resamples": 999, "seed": 0, **statistics},
                       "benchmarks": {"youcook2_retrieval": {"task": "retrieval", "corpus": "youcook2",
                                                             "reader": "youcook2"}}})


def _query_interval_statistics(paths, tmp_path) -> list[dict]:
    """statistics.csv's rows after `mcnflow summarize` of ``paths`` with query-only intervals."""
    out = tmp_path / "out"
    assert cli_main(["summarize", "--metrics", *map(str, paths), "--out-dir", str(out), "--settings",
                     _settings(interval="queries")]) == 0
    with open(out / "statistics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


SETTINGS = _settings()


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
    survival.write_text("status\tvideos\tpercent\nok\t90\t90.0\nunavailable\t10\t10.0\nprivate\t0\t0.0\n"
                        "total\t100\t100.0\n")
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
    # the answer first: the question, then each benchmark's primary metric
    assert report.index("**The question.**") < report.index("### youcook2_retrieval: R@10") < report.index(
        "## Per seed") < report.index("### youcook2_retrieval (retrieval)") < report.index("## Secondary metrics")
    assert "### youcook2_localization: mIoU" in report and "![" in report and "(plots/forest.png)" in report
    assert "| tv |  | t.v | 10.00 | 30.00 | 40.00 | 20.00 | 50.50 | 4 |" in report
    assert "| tv | tv | shared |  |" in report  # the experiments' designs, once
    # MCN's published numbers stand beside the reproduction, labelled with their source
    assert "| MCN published (Chen et al., ICCV 2021; YouCook2 leaderboard" in report and "18.10" in report
    assert "45.20" in report.split("## Per seed")[0]  # R@10, in the answer's table
    assert "R@1 = 0.50%, R@5 = 2.50%, R@10 = 5.00%" in report   # chance = K / 200
    assert "text branch not trained" in report
    # survival: the statuses that occurred, and the total
    assert "| unavailable | 10 | 10.0 |" in report and "| total | 100 | 100.0 |" in report
    assert "| private |" not in report
    # no table is wider than 9 columns
    widths = [line.count("|") - 1 for line in report.splitlines() if line.startswith("|")]
    assert widths and max(widths) <= 9
    assert (out / "answer.rst").read_text().startswith("The answer\n==========")

    plots = out / "plots"
    expected = ["recall_at_1", "recall_at_5", "recall_at_10", "median_rank", "mean_rank", "mean_iou",
                "recall_at_iou_0.3", "recall_at_iou_0.5", "training_loss", "forest"]
    for name in expected:
        png = plots / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not list(out.glob(".tmp-*")) and not list(plots.glob(".tmp-*"))


def test_training_log_is_read_by_step_or_epoch(inputs, tmp_path):
    from mcnflow.report import read_training_log
    curve = read_training_log(inputs[2][0])
    assert curve["x"] == "step" and curve["xs"] == [1.0, 2.0, 3.0] and curve["total"] == [3.0, 2.5, 2.0]
    assert curve["epoch_xs"] == [3.0] and curve["epoch_total"] == [pytest.approx(2.5)]
    # every loss term, total first: the training plot's panels
    assert list(curve["terms"]) == ["total", "mms", "clustering", "reconstruction"]
    assert curve["terms"]["mms"] == ([1.0, 2.0, 3.0], [1.5, 1.25, 1.0])
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
    rows = {r["experiment"]: r for r in _query_interval_statistics(paths, tmp_path)}
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
    assert row["reference"] == "tv" and float(row["p_value"]) < 0.01 and row["test"] == "paired permutation"
    assert row["interval"] == "queries" and row["family"] == "primary"
    assert float(row["p_adjusted"]) >= float(row["p_value"]) and row["survives"] == "True"
    assert rows["tv"]["reference"] == "" and rows["tv"]["p_value"] == "" and rows["tv"]["p_adjusted"] == ""
    report = (tmp_path / "out" / "summary.md").read_text()
    assert "### youcook2_retrieval: R@10" in report and " ± " in report and "p (Holm)" in report

    # the default: two seeds resampled, then the queries; wider, since the seeds differ
    two_level = tmp_path / "two_level"
    assert cli_main(["summarize", "--metrics", *map(str, paths), "--out-dir", str(two_level), "--settings",
                     SETTINGS]) == 0
    with open(two_level / "statistics.csv", newline="") as handle:
        wide = {r["experiment"]: r for r in csv.DictReader(handle)}["tv_ta"]
    assert wide["interval"] == "seeds_and_queries" and wide["test"] == BOTH_TESTS
    assert float(wide["mean"]) == float(row["mean"]) and float(wide["difference"]) == float(row["difference"])
    assert float(wide["ci_high"]) - float(wide["ci_low"]) > float(row["ci_high"]) - float(row["ci_low"])


def _step_record(experiment, seed, benchmark, task, recalls, groups=None):
    """An evaluation result of a step-localization benchmark with its per-video recalls (percent)."""
    keys = [f"{i}:vid{i:08d}" for i in range(len(recalls))]
    metric = f"{task}_recall"
    if groups:
        tasks = list(dict.fromkeys(groups))
        value = float(np.mean([np.mean([r for r, g in zip(recalls, groups) if g == t]) for t in tasks]))
    else:
        value = float(np.mean(recalls))
    per_query = {"keys": keys, "values": {metric: list(map(float, recalls))},
                 "aggregate": {metric: "group_mean" if groups else "mean"}}
    if groups:
        per_query["groups"] = groups
    return {"experiment": experiment, "seed": seed, "pairs": ["tv"], "space": "shared", "benchmark": benchmark,
            "task": task, "protocol": "mcn", "convention": "present", "scoring": "t.v",
            "metrics": {metric: value}, "n_queries": len(recalls), "n_missing": 0, "per_query": per_query}


def test_step_localization_has_intervals_tests_and_its_own_header(tmp_path):
    """CrossTask and Mining YouTube results with per-video recalls: statistics.csv gives them a CI and a
    paired test as retrieval's; CrossTask's CI is of the mean of task means (not of the video mean);
    summary.md's CrossTask section says what its recall averages."""
    rng = np.random.default_rng(3)
    groups = ["t1"] * 10 + ["t2"] * 6 + ["t3"] * 4
    paths = []
    for experiment, boost in (("tv", 0.0), ("tv_ta", 0.35)):
        for seed in (1, 2):
            # per-video recall: the share of a video's 4 steps placed right
            crosstask = 25.0 * rng.binomial(4, np.clip(0.3 + boost + 0.2 * (np.arange(20) >= 16), 0, 1))
            mining = 20.0 * rng.binomial(5, 0.3 + boost, size=15)
            for benchmark, record in (("crosstask", _step_record(experiment, seed, "crosstask", "crosstask",
                                                                 crosstask, groups)),
                                      ("mining_youtube", _step_record(experiment, seed, "mining_youtube",
                                                                      "mining_youtube", mining))):
                path = tmp_path / "eval" / experiment / f"seed-{seed}" / f"{benchmark}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(record))
                paths.append(path)
    rows = {(r["benchmark"], r["experiment"]): r for r in _query_interval_statistics(paths, tmp_path)}
    for benchmark, metric, n_videos in (("crosstask", "crosstask_recall", 20),
                                        ("mining_youtube", "mining_youtube_recall", 15)):
        for experiment in ("tv", "tv_ta"):
            row = rows[(benchmark, experiment)]
            assert row["metric"] == metric and row["n_seeds"] == "2" and row["std"] != ""
            assert row["n_queries"] == str(n_videos)
            assert float(row["ci_low"]) < float(row["mean"]) < float(row["ci_high"]), row
        better = rows[(benchmark, "tv_ta")]
        assert better["reference"] == "tv" and float(better["difference"]) > 0 and float(better["p_value"]) < 0.05
        assert rows[(benchmark, "tv")]["p_value"] == ""
    assert rows[("crosstask", "tv")]["aggregate"] == "group_mean"
    assert rows[("mining_youtube", "tv")]["aggregate"] == "mean"
    # the seed-pooled videos' mean of task means is the seeds' mean of the metric (not the videos' mean)
    records = [json.loads(p.read_text()) for p in paths if "crosstask" in p.name and "/tv/" in p.as_posix()]
    pooled = np.mean([r["per_query"]["values"]["crosstask_recall"] for r in records], axis=0)
    task_means = [pooled[[g == t for g in groups]].mean() for t in ("t1", "t2", "t3")]
    assert float(rows[("crosstask", "tv")]["mean"]) == pytest.approx(np.mean(task_means))
    assert np.mean(task_means) != pytest.approx(pooled.mean())
    # its CI: the videos resampled within each task (SETTINGS: 999 resamples, seed 0, percentile)
    from scipy import stats
    ci = stats.bootstrap((pooled[:10], pooled[10:16], pooled[16:]),
                         lambda a, b, c, axis=-1: (a.mean(axis) + b.mean(axis) + c.mean(axis)) / 3,
                         n_resamples=999, method="percentile", rng=np.random.default_rng(0)).confidence_interval
    row = rows[("crosstask", "tv")]
    assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((ci.low, ci.high))

    report = (tmp_path / "out" / "summary.md").read_text()
    crosstask = report.split("### crosstask (crosstask)")[1].split("\n### ")[0]
    assert "averaged over each task's videos, then over the tasks" in crosstask
    assert "Metrics: over the videos with features" in crosstask and "YouCook2" not in crosstask
    mining = report.split("### mining_youtube (mining_youtube)")[1].split("\n### ")[0]
    assert "log-softmax over the steps of each second" in mining and "averaged over the videos" in mining
    answer = report.split("## Per seed")[0]
    assert "### crosstask: CrossTask recall" in answer and "### mining_youtube: Mining YouTube recall" in answer
    assert "A mean of per-task means" in answer.split("### crosstask")[1].split("###")[0]
    assert "CrossTask recall mean ± std" in answer and "Mining YouTube recall mean ± std" in answer


def _markdown_tables(text):
    """Every markdown table of ``text``: (header, rows) with the cells stripped."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append((current[0], current[2:]))
            current = []
    return tables


def _fmt(value, digits=2, sign=False):
    return "" if value == "" else f"{float(value):{'+' if sign else ''}.{digits}f}"


def test_the_reports_first_table_is_statistics_csv(tmp_path):
    """summary.md opens with the answer: its first table holds, per experiment, statistics.csv's primary
    row (mean ± std, interval, difference from the reference with its interval, p, adjusted p, survival)."""
    rng = np.random.default_rng(5)
    keys = [f"{i}:v{i}" for i in range(40)]
    paths = []
    for experiment, rate in (("tv", 0.3), ("tv_ta", 0.7), ("ta", 0.35), ("tv_ta_va", 0.75)):
        for seed in (1, 2):
            values = ((rng.random(40) < rate) * 100.0).tolist()
            record = {"experiment": experiment, "seed": seed, "pairs": experiment.split("_"), "space": "shared",
                      "benchmark": "youcook2_retrieval", "task": "retrieval", "scoring": "t.v",
                      "metrics": {"recall_at_10": float(np.mean(values))}, "n_queries": 40, "n_missing": 0,
                      "per_query": {"keys": keys, "values": {"recall_at_10": values},
                                    "aggregate": {"recall_at_10": "mean"}}}
            path = tmp_path / "eval" / experiment / f"seed-{seed}" / "youcook2_retrieval.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(record))
            paths.append(path)
    out = tmp_path / "out"
    assert cli_main(["summarize", "--metrics", *map(str, paths), "--out-dir", str(out), "--settings", SETTINGS]) == 0
    header, table = _markdown_tables((out / "summary.md").read_text())[0]
    assert header == ["experiment", "seeds", "R@10 mean ± std", "95% CI", "Δ vs tv", "Δ 95% CI", "p", "p (Holm)",
                      "survives"]
    with open(out / "statistics.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["metric"] == "recall_at_10"]
    published = [line for line in table if line[0].startswith("MCN published")]
    assert [line[2] for line in published] == ["45.20"]
    expected = [[r["experiment"], r["n_seeds"], f"{_fmt(r['mean'])} ± {_fmt(r['std'])}",
                 f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", _fmt(r["difference"], sign=True),
                 f"[{_fmt(r['diff_low'])}, {_fmt(r['diff_high'])}]" if r["diff_low"] else "",
                 f"{float(r['p_value']):.3g}" if r["p_value"] else "",
                 f"{float(r['p_adjusted']):.3g}" if r["p_adjusted"] else "",
                 {"True": "yes", "False": "no"}.get(r["survives"], "")] for r in rows]
    assert [line for line in table if line not in published] == expected
    assert {r["family"] for r in rows} == {"primary"}
    # the pair effects table follows, then the forest plot
    effects_header, effects = _markdown_tables((out / "summary.md").read_text())[1]
    assert effects_header[:4] == ["benchmark", "metric", "pair", "effect"] and effects_header[-1] == "contrasts"
    with open(out / "pair_effects.csv", newline="") as handle:
        csv_effects = list(csv.DictReader(handle))
    assert [(e[2], e[3], e[-1]) for e in effects] == [
        (r["pair"], _fmt(r["effect"], sign=True), r["contrasts"].replace(";", "; ")) for r in csv_effects]
    # pairs from the results: tv, ta, tv_ta and tv_ta_va give each pair one contrast
    assert {r["pair"]: r["contrasts"] for r in csv_effects} == {"tv": "tv_ta-ta", "ta": "tv_ta-tv",
                                                                "va": "tv_ta_va-tv_ta"}


def test_training_curves_colour_experiments_and_style_seeds(tmp_path):
    """Fourteen runs (seven experiments x two seeds): a panel per loss term, seven colours, two styles."""
    from matplotlib.colors import to_hex
    from mcnflow.report import read_training_log, training_figure
    logs = []
    for e, experiment in enumerate(("tv", "ta", "va", "tv_ta", "tv_ta_va", "tv_ta_va_per_pair", "tv_ta_va_fac")):
        for seed in ("1", "2"):
            log = tmp_path / experiment / f"seed-{seed}" / "log.tsv"
            log.parent.mkdir(parents=True)
            rows = ["kind\tepoch\tstep\tlr\ttotal\tmms\tclustering\treconstruction\tkmeans_fits\tseconds"]
            rows += [f"step\t1\t{i}\t1e-4\t{5 + e - i / 10}\t{1 + e}\t0.5\t{0.1 * int(seed)}\t0\t0.1" for i in range(1, 6)]
            log.write_text("\n".join(rows) + "\n")
            logs.append((experiment, seed, read_training_log(log)))
    figure = training_figure(logs)
    panels = [ax for ax in figure.axes if ax.get_visible() and ax.lines]
    assert [ax.get_title() for ax in panels] == ["total (the weighted sum)", "mms", "clustering", "reconstruction"]
    for ax in panels:
        assert len(ax.lines) == 14
        by_experiment = {}
        for line, (experiment, seed, _) in zip(ax.lines, logs):
            by_experiment.setdefault(experiment, set()).add(to_hex(line.get_color()))
            assert line.get_linestyle() == {"1": "-", "2": "--"}[seed]
        assert all(len(colours) == 1 for colours in by_experiment.values())
        assert len({next(iter(c)) for c in by_experiment.values()}) == 7  # no two experiments share a colour
