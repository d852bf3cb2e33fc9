"""``mcnflow summarize``: every experiment's metrics in one table, one plot per metric, training curves.

Inputs: the metric files of ``mcnflow evaluate`` (results/eval/<experiment>/<benchmark>.json), the
training logs (results/train/<experiment>/log.tsv) and, optionally, the download survival tables.
Outputs (all written atomically):

- ``summary.csv``: one row per experiment and benchmark (pairs, space, scoring, every metric,
  n_queries, n_missing, protocol, convention, n_excluded, the other convention's metrics as
  ``<metric>_<convention>``, note);
- ``summary.md``: a markdown table per benchmark, with the chance level of each retrieval benchmark
  (R@K of a random ranking = K / n_queries), then the download survival tables;
- ``plots/<metric>.png``: the metric of every experiment, grouped by benchmark;
- ``plots/training_loss.png``: each experiment's total loss over training;
- ``plots/download_survival.png`` (or ``--survival-chart``), with ``--survival``: one bar per corpus,
  survived / gone (per kind) / blocked / never tried / not yet / failed / skipped.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math

import numpy as np
from pathlib import Path
from typing import Any, Iterable, Sequence

from mcnflow.core.atomic import atomic_path, atomic_write
from mcnflow.core.config import add_settings_arguments, settings_from_args
from mcnflow.evaluation.metrics import RECALL_KS, chance_recall
from mcnflow.statistics import STAT_COLUMNS, study_rows

log = logging.getLogger(__name__)

ID_COLUMNS = ("experiment", "seed", "pairs", "space", "benchmark", "task", "scoring")
COUNT_COLUMNS = ("n_queries", "n_missing")
# which protocol and convention a result's `metrics` follow, and the queries its benchmark left out
PROTOCOL_COLUMNS = ("protocol", "convention", "n_excluded")
CONVENTION_LABELS = {"present": "ranked among the clips present, over the queries present (MCN's YouCook2)",
                     "failures": "queries without features count as failures (MCN's MSR-VTT)"}
PROTOCOL_LABELS = {"mcn": "MCN's protocol", "mcnflow": "mcnflow's own protocol, not an MCN one"}
# how metric names read in the markdown table and on plot axes
LABELS = {"recall_at_1": "R@1", "recall_at_5": "R@5", "recall_at_10": "R@10", "median_rank": "MedR",
          "mean_rank": "MeanR", "mean_iou": "mIoU", "crosstask_recall": "CrossTask recall",
          "mining_youtube_recall": "Mining YouTube recall"}
LOWER_IS_BETTER = {"median_rank", "mean_rank"}
LOSS_COLUMNS = ("total", "loss")  # the training log's total-loss column, first found
X_COLUMNS = ("step", "epoch")  # the training log's x axis, first found


def label(metric: str) -> str:
    if metric in LABELS:
        return LABELS[metric]
    if metric.startswith("recall_at_iou_"):
        return f"R@IoU={metric.removeprefix('recall_at_iou_')}"
    return metric


# --- reading ---------------------------------------------------------------------------------------

def read_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The evaluation JSON files, sorted by experiment then benchmark."""
    results = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        missing = [k for k in ("experiment", "benchmark", "metrics") if k not in data]
        if missing:
            raise ValueError(f"{path}: not an mcnflow evaluation result (missing {', '.join(missing)})")
        results.append(data)
    return sorted(results, key=lambda r: (r["experiment"], r.get("seed", 0), r["benchmark"]))


def metric_names(results: Sequence[dict[str, Any]]) -> list[str]:
    """Every metric, in first-seen order (retrieval metrics keep their R@1, R@5, ... order)."""
    names: dict[str, None] = {}
    for result in results:
        for name in result.get("metrics", {}):
            names.setdefault(name, None)
    return list(names)


def read_training_log(path: str | Path) -> dict[str, Any]:
    """The total loss of a training log.tsv: ``{"x": name, "xs", "total", "epoch_xs", "epoch_total"}``.

    mcnflow's trainer writes a ``kind`` column: ``step`` rows (one per optimisation step) and ``epoch``
    rows (that epoch's mean); a log without ``kind`` is read as per-step (or per-epoch) rows. The x
    axis is the first of the step / epoch columns present; rows with an empty loss are skipped.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    columns = list(rows[0]) if rows else []
    x_name = next((c for c in X_COLUMNS if c in columns), None)
    y_name = next((c for c in LOSS_COLUMNS if c in columns), None)
    if rows and (x_name is None or y_name is None):
        raise ValueError(f"{path}: expected a {'/'.join(X_COLUMNS)} column and a {'/'.join(LOSS_COLUMNS)} "
                         f"column; found {', '.join(columns)}")
    curve: dict[str, Any] = {"x": x_name or "step", "xs": [], "total": [], "epoch_xs": [], "epoch_total": []}
    for row in rows:
        try:
            x, y = float(row[x_name]), float(row[y_name])
        except (TypeError, ValueError):
            continue
        if not math.isfinite(y):
            continue
        prefix = "epoch_" if row.get("kind") == "epoch" else ""
        curve[prefix + "xs"].append(x)
        curve[prefix + "total"].append(y)
    return curve


def experiment_of_log(path: str | Path) -> str:
    """results/train/<experiment>/seed-<n>/log.tsv -> "<experiment> seed <n>" (or <experiment>)."""
    parent = Path(path).parent
    if parent.name.startswith("seed-"):
        return f"{parent.parent.name} seed {parent.name.removeprefix('seed-')}"
    return parent.name


# --- writing ---------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) else ""
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


def other_conventions(result: dict[str, Any]) -> dict[str, Any]:
    """``{<metric>_<convention>: value}`` for the convention(s) other than the one ``metrics`` follows."""
    headline = result.get("convention")
    return {f"{name}_{convention}": value
            for convention, values in (result.get("metrics_by_convention") or {}).items() if convention != headline
            for name, value in values.items()}


def convention_columns(results: Sequence[dict[str, Any]]) -> list[str]:
    """The other conventions' metric columns, in first-seen order."""
    return list(dict.fromkeys(name for result in results for name in other_conventions(result)))


def summary_rows(results: Sequence[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        row = {key: result.get(key) for key in ID_COLUMNS}
        row["pairs"] = "+".join(result.get("pairs") or [])
        for name in metrics:
            row[name] = result["metrics"].get(name)
        for key in COUNT_COLUMNS:
            row[key] = result.get(key)
        for key in PROTOCOL_COLUMNS:
            row[key] = result.get(key)
        row.update(other_conventions(result))
        row["note"] = result.get("note") or ""
        rows.append(row)
    return rows


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    with atomic_write(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def chance_line(n_queries: int) -> str:
    parts = [f"R@{k} = {chance_recall(k, n_queries):.2f}%" for k in RECALL_KS]
    return (f"Chance level (random ranking of {n_queries} clips): " + ", ".join(parts)
            + f", MedR = {(n_queries + 1) / 2:.1f}.")


def _convention_label(column: str) -> str:
    """``recall_at_1_failures`` -> ``R@1 (failures)``."""
    name, _, convention = column.rpartition("_")
    return f"{label(name)} ({convention})"


def protocol_line(rows: Sequence[dict[str, Any]]) -> str:
    """Whose protocol and which convention a benchmark's metrics follow, and what it left out ('' when unknown)."""
    parts = []
    protocols = sorted({r["protocol"] for r in rows if r.get("protocol")})
    conventions = sorted({r["convention"] for r in rows if r.get("convention")})
    # the count is shown whenever the benchmark excludes another corpus's videos, zero included
    excluded = sorted({(r.get("excluded_by"), int(r.get("n_excluded") or 0)) for r in rows if r.get("excluded_by")},
                      key=lambda pair: (str(pair[0]), pair[1]))
    parts += [f"Protocol: {PROTOCOL_LABELS.get(p, p)}." for p in protocols]
    parts += [f"Metrics: {CONVENTION_LABELS.get(c, c)}." for c in conventions]
    parts += [f"Left out: {n} queries of videos in {corpus}." for corpus, n in excluded]
    return " ".join(parts) + "\n\n" if parts else ""


def summary_markdown(results: Sequence[dict[str, Any]], survival: Sequence[Path]) -> str:
    out = io.StringIO()
    out.write("# mcnflow results\n\n")
    out.write("Retrieval metrics are in percent (R@K) and ranks (MedR, MeanR); localization metrics in percent. "
              "Queries whose clip has no features (n_missing) count as failures, or, where a benchmark's convention "
              "is `present`, are left out; the other convention's columns are marked (present) / (failures).\n")
    benchmarks = sorted({r["benchmark"] for r in results})
    for benchmark in benchmarks:
        rows = [r for r in results if r["benchmark"] == benchmark]
        names = metric_names(rows)
        task = rows[0].get("task", "")
        out.write(f"\n## {benchmark} ({task})\n\n")
        out.write(protocol_line(rows))
        others = convention_columns(rows)
        header = ["experiment", "seed", "pairs", "space", "scoring", *[label(n) for n in names],
                  *[_convention_label(n) for n in others], "n_queries", "n_missing", "note"]
        table = [[r["experiment"], r.get("seed", ""), r.get("pairs") or [], r.get("space", ""), r.get("scoring", ""),
                  *[r["metrics"].get(n) for n in names], *[other_conventions(r).get(n) for n in others],
                  r.get("n_queries"), r.get("n_missing"), r.get("note", "")]
                 for r in rows]
        out.write(markdown_table(header, table) + "\n")
        if task == "retrieval":
            sizes = sorted({int(r["n_queries"]) for r in rows if r.get("n_queries")})
            for n_queries in sizes:
                out.write("\n" + chance_line(n_queries) + "\n")
    for path in survival:
        out.write(f"\n## Download survival: {Path(path).parent.name}\n\n")
        with open(path, encoding="utf-8", newline="") as handle:
            table = list(csv.reader(handle, delimiter="\t"))
        if table:
            out.write(markdown_table(table[0], table[1:]) + "\n")
    return out.getvalue()


# Published zero-shot numbers shown beside the reproduction (only ones verified at their source).
PUBLISHED = {
    ("youcook2", "retrieval"): {
        "label": "MCN published (Chen et al., ICCV 2021; YouCook2 leaderboard, 3,350 validation clips not in HowTo100M)",
        "metrics": {"recall_at_1": 18.1, "recall_at_5": 35.5, "recall_at_10": 45.2},
    },
}


def _pm(mean: Any, std: Any) -> str:
    if mean is None or not math.isfinite(mean):
        return ""
    return f"{mean:.2f} ± {std:.2f}" if std is not None and math.isfinite(std) else f"{mean:.2f}"


def statistics_markdown(rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> str:
    """Per benchmark: mean ± std over seeds, the bootstrap CI and the paired test, one row per experiment."""
    statistics = settings.get("statistics") or {}
    benchmarks = settings.get("benchmarks") or {}
    out = io.StringIO()
    if not rows:
        return ""
    confidence = int(round(100 * float(statistics.get("confidence", 0.95))))
    out.write("\n# Across seeds\n\n")
    out.write(f"mean ± std over seeds; {confidence}% bootstrap CI over queries (each query's value averaged over "
              "the seeds); Δ and p: paired permutation test against the reference experiment "
              f"({statistics.get('reference') or 'none'}) on the same queries, two-sided.\n")
    for benchmark in sorted({r["benchmark"] for r in rows}):
        mine = [r for r in rows if r["benchmark"] == benchmark]
        metrics = list(dict.fromkeys(r["metric"] for r in mine))
        out.write(f"\n## {benchmark}\n\n")
        header = ["experiment", "seeds"]
        for m in metrics:
            header += [label(m), f"{label(m)} {confidence}% CI", f"Δ{label(m)} (p)"]
        table = []
        for experiment in sorted({r["experiment"] for r in mine}):
            cells = {r["metric"]: r for r in mine if r["experiment"] == experiment}
            line = [experiment, max(r["n_seeds"] for r in cells.values())]
            for m in metrics:
                r = cells.get(m, {})
                ci = (f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r.get("ci_low") is not None else "")
                test = (f"{r['difference']:+.2f} (p={r['p_value']:.3g})" if r.get("p_value") is not None else "")
                line += [_pm(r.get("mean"), r.get("std")), ci, test]
            table.append(line)
        spec = benchmarks.get(benchmark) or {}
        published = PUBLISHED.get((spec.get("reader"), spec.get("task")))
        if published and any(m in published["metrics"] for m in metrics):
            line = [published["label"], ""]
            for m in metrics:
                line += [published["metrics"].get(m), "", ""]
            table.append(line)
        out.write(markdown_table(header, table) + "\n")
    return out.getvalue()


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_metric(path: Path, metric: str, results: Sequence[dict[str, Any]]) -> None:
    """Grouped bars: one group per benchmark with this metric, one bar per experiment (R@K: chance dashed)."""
    plt = _pyplot()
    scored = [r for r in results if metric in r["metrics"]]
    benchmarks = sorted({r["benchmark"] for r in scored})
    experiments = sorted({r["experiment"] for r in scored})
    per_seed: dict[tuple[str, str], list[float]] = {}
    for r in scored:
        per_seed.setdefault((r["benchmark"], r["experiment"]), []).append(float(r["metrics"][metric]))
    width = 0.8 / max(len(experiments), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 2.0 + 0.45 * len(benchmarks) * len(experiments)), 4.0))
    for i, experiment in enumerate(experiments):
        xs = [b + (i - (len(experiments) - 1) / 2) * width for b in range(len(benchmarks))]
        values = [per_seed.get((bench, experiment), []) for bench in benchmarks]
        ys = [float(np.mean(v)) if v else math.nan for v in values]
        # error bars: the standard deviation over seeds (none with one seed)
        errors = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in values]
        axes.bar(xs, ys, width=width, label=experiment, yerr=errors, capsize=2)
    k = _recall_k(metric)
    if k is not None:
        for b, bench in enumerate(benchmarks):
            sizes = {int(r["n_queries"]) for r in scored if r["benchmark"] == bench and r.get("n_queries")}
            for n_queries in sizes:
                axes.hlines(chance_recall(k, n_queries), b - 0.4, b + 0.4, colors="black", linestyles="dashed",
                            label="chance" if b == 0 else None)
    axes.set_xticks(range(len(benchmarks)), benchmarks)
    direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    axes.set_ylabel(f"{label(metric)} ({direction})")
    axes.set_title(label(metric))
    unscored = sorted({r["experiment"] for r in results if not r["metrics"]})
    if unscored:
        axes.set_xlabel("not scored (text branch not trained): " + ", ".join(unscored), fontsize="small")
    if experiments:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(figure, path)
    plt.close(figure)


def _recall_k(metric: str) -> int | None:
    """K of a retrieval ``recall_at_K`` metric (None for any other metric)."""
    suffix = metric.removeprefix("recall_at_")
    return int(suffix) if metric != suffix and suffix.isdigit() else None


def plot_training(path: Path, logs: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Each experiment's total loss per step (line) and per-epoch mean (dots) against its step."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7.0, 4.0))
    x_names = sorted({curve["x"] for _, curve in logs if curve["xs"] or curve["epoch_xs"]})
    drawn = False
    for experiment, curve in logs:
        color = None
        if curve["xs"]:
            (line,) = axes.plot(curve["xs"], curve["total"], label=experiment, linewidth=1.0, alpha=0.8)
            color = line.get_color()
        if curve["epoch_xs"]:
            axes.plot(curve["epoch_xs"], curve["epoch_total"], "o", color=color, markersize=4,
                      label=None if color else f"{experiment} (epoch mean)")
        drawn = drawn or bool(curve["xs"] or curve["epoch_xs"])
    if drawn:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes.text(0.5, 0.5, "no training log rows", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel(" / ".join(x_names) or "step")
    axes.set_ylabel("total loss (dots: epoch mean)")
    axes.set_title("Training loss")
    _save(figure, path)
    plt.close(figure)


def plot_survival(path: Path, survival_paths: Sequence[str | Path]) -> None:
    """One stacked bar per corpus (survival.tsv files of ``mcnflow survival``): the share of its videos
    that survived, are gone (one segment per kind), were blocked, never tried, not yet there, failed or skipped."""
    from mcnflow.core.status import DOWNLOAD_OUTCOMES, DOWNLOAD_PERMANENT, DownloadOutcome, DownloadStatus
    plt = _pyplot()
    gone = [str(s) for s in DOWNLOAD_PERMANENT]
    segments = [("survived", "#2e7d32"), *[(f"gone: {kind}", color) for kind, color in
                zip(gone, ("#c62828", "#e65100", "#ad1457", "#f9a825", "#6d4c41"))],
                ("blocked (answers about us)", "#5e35b1"), ("never tried", "#9e9e9e"), ("not yet", "#1e88e5"),
                ("failed", "#37474f"), ("skipped", "#cfd8dc")]
    bars: list[tuple[str, dict[str, int], int]] = []
    for table_path in survival_paths:
        with open(table_path, encoding="utf-8", newline="") as handle:
            rows = [r for r in csv.DictReader(handle, delimiter="\t") if r.get("status") not in ("total", "survival")]
        counts: dict[str, int] = {name: 0 for name, _ in segments}
        for row in rows:
            videos, never = int(row.get("videos") or 0), int(row.get("never_tried") or 0)
            try:
                outcome = DOWNLOAD_OUTCOMES[DownloadStatus(row["status"])]
            except ValueError:
                outcome = DownloadOutcome.FAILED
            name = {DownloadOutcome.SURVIVED: "survived", DownloadOutcome.BLOCKED: "blocked (answers about us)",
                    DownloadOutcome.NOT_YET: "not yet", DownloadOutcome.SKIPPED: "skipped"}.get(outcome, "failed")
            if outcome == DownloadOutcome.GONE:
                name = f"gone: {row['status']}"
            counts[name] += videos - never
            counts["never tried"] += never
        corpus = (rows[0].get("corpus") if rows else None) or Path(table_path).parent.name
        bars.append((corpus, counts, sum(counts.values())))
    figure, axes = plt.subplots(figsize=(8.0, 1.2 + 0.5 * max(len(bars), 1)))
    for y, (corpus, counts, total) in enumerate(bars):
        left = 0.0
        for name, color in segments:
            share = 100.0 * counts[name] / total if total else 0.0
            axes.barh(y, share, left=left, color=color, label=name if y == 0 else None, edgecolor="white",
                      hatch="//" if name == "never tried" else None)
            left += share
    axes.set_yticks(range(len(bars)), [f"{corpus} ({total} videos)" for corpus, _, total in bars])
    axes.set_xlim(0, 100)
    axes.set_xlabel("% of the corpus's videos")
    axes.set_title("Download survival")
    if bars:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(figure, path)
    plt.close(figure)


def plot_file_name(metric: str) -> str:
    """plots/<metric>.png; metric names are already file-name safe (letters, digits, _ and .)."""
    return f"{metric}.png"


def summarize(metric_paths: Sequence[str | Path], log_paths: Sequence[str | Path],
              survival_paths: Sequence[str | Path], out_dir: str | Path,
              settings: dict[str, Any] | None = None) -> dict[str, Path]:
    """``settings``: the summarize stage's (statistics settings and each benchmark's corpus reader)."""
    out_dir = Path(out_dir)
    settings = settings or {"statistics": {}, "benchmarks": {}}
    results = read_results(metric_paths)
    metrics = metric_names(results)
    written: dict[str, Path] = {}

    columns = [*ID_COLUMNS, *metrics, *COUNT_COLUMNS, *PROTOCOL_COLUMNS, *convention_columns(results), "note"]
    written["csv"] = out_dir / "summary.csv"
    write_csv(written["csv"], summary_rows(results, metrics), columns)

    stats_rows = study_rows(results, settings.get("statistics") or {})
    written["statistics"] = out_dir / "statistics.csv"
    write_csv(written["statistics"], stats_rows, STAT_COLUMNS)

    written["markdown"] = out_dir / "summary.md"
    with atomic_write(written["markdown"]) as handle:
        handle.write(summary_markdown(results, [Path(p) for p in survival_paths]))
        handle.write(statistics_markdown(stats_rows, settings))

    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for metric in metrics:
        written[metric] = plots / plot_file_name(metric)
        plot_metric(written[metric], metric, results)
    logs = sorted((experiment_of_log(p), read_training_log(p)) for p in log_paths)
    written["training_loss"] = plots / "training_loss.png"
    plot_training(written["training_loss"], logs)
    return written


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", nargs="*", default=[], metavar="JSON",
                        help="evaluation results (results/eval/<experiment>/seed-<n>/<benchmark>.json)")
    parser.add_argument("--train-logs", nargs="*", default=[], metavar="TSV",
                        help="training logs (results/train/<experiment>/seed-<n>/log.tsv)")
    parser.add_argument("--survival", nargs="*", default=[], metavar="TSV",
                        help="download survival tables (results/download/<corpus>/survival.tsv), optional")
    parser.add_argument("--out-dir", default="results", help="where summary.csv, summary.md and plots/ go")
    parser.add_argument("--survival-chart", metavar="PNG",
                        help="where the download survival chart goes (default: <out-dir>/plots/download_survival.png; "
                             "written when --survival is given)")
    add_settings_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, "summarize")
    written = summarize(args.metrics, args.train_logs, args.survival, args.out_dir, settings)
    print(f"summary table: {written['csv']}")
    print(f"report: {written['markdown']}")
    print(f"statistics: {written['statistics']}")
    print(f"plots: {Path(args.out_dir) / 'plots'}")
    if args.survival:
        chart = Path(args.survival_chart or Path(args.out_dir) / "plots" / "download_survival.png")
        chart.parent.mkdir(parents=True, exist_ok=True)
        plot_survival(chart, args.survival)
        print(f"survival chart: {chart}")
    return 0
