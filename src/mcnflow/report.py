"""``mcnflow summarize``: the study's answer first, then every experiment's metrics, plots and curves.

Inputs: the metric files of ``mcnflow evaluate`` (results/eval/<experiment>/seed-<n>/<benchmark>.json),
the training logs (results/train/<experiment>/seed-<n>/log.tsv) and, optionally, the download survival
tables. Outputs (all written atomically):

- ``summary.csv``: one row per experiment, seed and benchmark (pairs, space, scoring, every metric,
  n_queries, n_missing, protocol, convention, n_excluded, the other convention's metrics as
  ``<metric>_<convention>``, note);
- ``statistics.csv``: one row per benchmark, experiment and metric (:data:`mcnflow.statistics.STAT_COLUMNS`):
  mean ± std over seeds, the metric's interval, the difference from the reference experiment with its
  interval, test and adjusted p-value (family: primary or secondary metric);
- ``pair_effects.csv`` (:data:`mcnflow.statistics.EFFECT_COLUMNS`): per benchmark, on its primary
  metric, the effect of adding each pair and of each space against the shared one;
- ``power.csv``: the minimum detectable difference per primary metric, now and with more seeds or queries;
- ``summary.md``: the answer (the question, per benchmark its primary metric's table, the pair effects,
  the forest plot, the planning power), then per-seed tables, the secondary metrics and the download
  survival (statuses that occurred); no table is wider than :data:`MAX_COLUMNS` columns;
- ``answer.rst``: the answer as reStructuredText, the first page of the Snakemake HTML report;
- ``plots/forest.png``: pair effects and differences from the reference with intervals, a panel per benchmark;
- ``plots/<metric>.png``: the metric of every experiment, grouped by benchmark;
- ``plots/training_loss.png``: a panel per loss term, a colour per experiment, a line style per seed;
- ``plots/download_survival.png`` (or ``--survival-chart``), with ``--survival``: one bar per corpus,
  survived / gone (per kind) / blocked / never tried / not yet / failed / given up / skipped.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from mcnflow.core.atomic import atomic_path, atomic_write
from mcnflow.core.config import add_settings_arguments, settings_from_args
from mcnflow.evaluation.metrics import RECALL_KS, chance_recall
from mcnflow.statistics import (EFFECT_COLUMNS, GROUP_MEAN, PRIMARY, QUERY_ONLY, SECONDARY, STAT_COLUMNS, TWO_LEVEL,
                                Study, power_columns, study)

log = logging.getLogger(__name__)

ID_COLUMNS = ("experiment", "seed", "pairs", "space", "benchmark", "task", "scoring")
COUNT_COLUMNS = ("n_queries", "n_missing")
# which protocol and convention a result's `metrics` follow, and the queries its benchmark left out
PROTOCOL_COLUMNS = ("protocol", "convention", "n_excluded")
# what a benchmark's metrics are computed over, per task and convention
_STEP_CONVENTIONS = {"present": "over the videos with features (MCN's CrossTask test csv lists only those)",
                     "failures": "videos without features count with recall 0"}
CONVENTION_LABELS = {
    "retrieval": {"present": "ranked among the clips present, over the queries present (MCN's YouCook2)",
                  "failures": "queries without features count as failures (MCN's MSR-VTT)"},
    "localization": {"present": "over the queries present", "failures": "queries without features have IoU 0"},
    "crosstask": _STEP_CONVENTIONS,
    "mining_youtube": _STEP_CONVENTIONS,
}
PROTOCOL_LABELS = {"mcn": "MCN's protocol", "mcnflow": "mcnflow's own protocol, not an MCN one"}
# what a step-localization metric computes (evaluation/crosstask.py), in the section of its benchmark
_STEP_RECALL = ("the dynamic program places each step on one second, in order; a video's recall is its steps "
                "placed on one of their annotated seconds / its annotated steps (a video with none is skipped)")
TASK_LABELS = {
    "crosstask": ("CrossTask step recall (Zhukov et al., CVPR 2019), computed as MCN's eval_cross.py does: raw "
                  f"scores; {_STEP_RECALL}; averaged over each task's videos, then over the tasks. (CrossTask's "
                  "own code instead divides a task's recalled steps by its annotated steps, both summed over its "
                  "videos.)"),
    "mining_youtube": ("Mining YouTube step recall (Kuehne et al. 2019), computed as MCN's eval_cross.py does: "
                       f"log-softmax over the steps of each second; {_STEP_RECALL}; averaged over the videos."),
}
# how metric names read in the markdown table and on plot axes
LABELS = {"recall_at_1": "R@1", "recall_at_5": "R@5", "recall_at_10": "R@10", "median_rank": "MedR",
          "mean_rank": "MeanR", "mean_iou": "mIoU", "crosstask_recall": "CrossTask recall",
          "mining_youtube_recall": "Mining YouTube recall"}
LOWER_IS_BETTER = {"median_rank", "mean_rank"}
LOSS_COLUMNS = ("total", "loss")  # the training log's total-loss column, first found
NOT_LOSSES = ("kind", "epoch", "step", "lr", "kmeans_fits", "seconds")  # a log's other columns are loss terms
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
    """The losses of a training log.tsv: ``{"x": name, "xs", "total", "epoch_xs", "epoch_total", "terms",
    "epoch_terms"}``; ``terms`` / ``epoch_terms``: every loss column (total first) -> ``(xs, ys)``.

    mcnflow's trainer writes a ``kind`` column: ``step`` rows (one per optimisation step) and ``epoch``
    rows (that epoch's mean); a log without ``kind`` is read as per-step (or per-epoch) rows. The x
    axis is the first of the step / epoch columns present; empty or non-finite values are skipped.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    columns = list(rows[0]) if rows else []
    x_name = next((c for c in X_COLUMNS if c in columns), None)
    y_name = next((c for c in LOSS_COLUMNS if c in columns), None)
    if rows and (x_name is None or y_name is None):
        raise ValueError(f"{path}: expected a {'/'.join(X_COLUMNS)} column and a {'/'.join(LOSS_COLUMNS)} "
                         f"column; found {', '.join(columns)}")
    names = [y_name, *(c for c in columns if c not in NOT_LOSSES and c != y_name)] if y_name else []
    curve: dict[str, Any] = {"x": x_name or "step", "terms": {n: ([], []) for n in names},
                             "epoch_terms": {n: ([], []) for n in names}}
    for row in rows:
        try:
            x = float(row[x_name])
        except (TypeError, ValueError):
            continue
        series = curve["epoch_terms" if row.get("kind") == "epoch" else "terms"]
        for name in names:
            try:
                y = float(row[name])
            except (TypeError, ValueError):
                continue
            if math.isfinite(y):
                series[name][0].append(x)
                series[name][1].append(y)
    for prefix in ("", "epoch_"):
        xs, ys = curve[prefix + "terms"].get(y_name, ([], [])) if y_name else ([], [])
        curve[prefix + "xs"], curve[prefix + "total"] = list(xs), list(ys)
        curve[prefix + "terms"] = {n: s for n, s in curve[prefix + "terms"].items() if s[0]}
    return curve


def branch_of_log(path: str | Path) -> tuple[str, str | None]:
    """results/train/<experiment>/seed-<n>/log.tsv -> (<experiment>, <n>); without a seed folder, (<experiment>, None)."""
    parent = Path(path).parent
    if parent.name.startswith("seed-"):
        return parent.parent.name, parent.name.removeprefix("seed-")
    return parent.name, None


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
    """Whose protocol and which convention a benchmark's metrics follow, what they compute (step
    localization) and what the benchmark left out ('' when unknown)."""
    task = rows[0].get("task", "") if rows else ""
    conventions_of = CONVENTION_LABELS.get(task, {})
    parts = []
    protocols = sorted({r["protocol"] for r in rows if r.get("protocol")})
    conventions = sorted({r["convention"] for r in rows if r.get("convention")})
    # the count is shown whenever the benchmark excludes another corpus's videos, zero included
    excluded = sorted({(r.get("excluded_by"), int(r.get("n_excluded") or 0)) for r in rows if r.get("excluded_by")},
                      key=lambda pair: (str(pair[0]), pair[1]))
    parts += [f"Protocol: {PROTOCOL_LABELS.get(p, p)}." for p in protocols]
    parts += [TASK_LABELS[task]] if task in TASK_LABELS else []
    parts += [f"Metrics: {conventions_of.get(c, c)}." for c in conventions]
    parts += [f"Left out: {n} queries of videos in {corpus}." for corpus, n in excluded]
    return " ".join(parts) + "\n\n" if parts else ""


# Published zero-shot numbers shown beside the reproduction (only ones verified at their source).
PUBLISHED = {
    ("youcook2", "retrieval"): {
        "label": "MCN published (Chen et al., ICCV 2021; YouCook2 leaderboard, 3,350 validation clips not in HowTo100M)",
        "metrics": {"recall_at_1": 18.1, "recall_at_5": 35.5, "recall_at_10": 45.2},
    },
}


# --- the report as blocks, written as markdown (summary.md) or reStructuredText (answer.rst) -----------

MAX_COLUMNS = 9  # no report table is wider
QUESTION = ("Which modality pairs should MCN's contrastive objective pull together (text-video tv, text-audio ta, "
            "video-audio va), and does a separate embedding space per pair (or MMV's fine-and-coarse spaces) beat "
            "one shared space?")
PAIR_COLOR, DIFFERENCE_COLOR = "#d62728", "#1f77b4"  # the forest plot's pair effects and differences
FOREST = "forest.png"
ADJUSTMENT_LABELS = {"holm": "Holm", "fdr_bh": "BH"}
INTERVAL_LABELS = {TWO_LEVEL: "two-level bootstrap (each experiment's seeds, then the queries, resampled)",
                   QUERY_ONLY: "bootstrap over the queries (each query's value averaged over the seeds)"}
TEST_LABELS = {TWO_LEVEL: ("two-sided, the larger of the two-level bootstrap's p-value and the paired permutation "
                           "test's on the same queries"),
               QUERY_ONLY: "two-sided paired permutation test on the same queries"}
SURVIVAL_TOTALS = ("total", "survival")  # a survival table's summary rows, always shown
FEW_QUERIES = 10  # below this many queries a benchmark's intervals and tests are flagged as rough
GROUP_MEAN_NOTE = ("A mean of per-task means: the CI resamples the videos within each task, and a video weighs "
                   "1 / (tasks x its task's videos).")


@dataclass
class Document:
    """Headings, paragraphs, tables and images, written as markdown or reStructuredText."""
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        if text.strip():
            self.blocks.append(("paragraph", text.strip()))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if len(header) > MAX_COLUMNS:
            raise ValueError(f"a report table has at most {MAX_COLUMNS} columns, not {len(header)}: {header}")
        self.blocks.append(("table", ([str(h) for h in header], [[_cell(v) for v in row] for row in rows])))

    def wide_table(self, keys: Sequence[str], key_rows: Sequence[Sequence[Any]], columns: Sequence[str],
                   value_rows: Sequence[Sequence[Any]], tail: Sequence[str] = (),
                   tail_rows: Sequence[Sequence[Any]] = ()) -> None:
        """``keys`` and ``tail`` columns beside as many ``columns`` as fit: several tables when needed."""
        width = MAX_COLUMNS - len(keys) - len(tail)
        chunks = [list(range(i, min(i + width, len(columns)))) for i in range(0, len(columns), width)] or [[]]
        for number, chunk in enumerate(chunks):
            last = number == len(chunks) - 1
            header = [*keys, *(columns[i] for i in chunk), *(tail if last else ())]
            rows = [[*key, *(values[i] for i in chunk), *(extra if last else ())]
                    for key, values, extra in zip(key_rows, value_rows, tail_rows or [()] * len(key_rows))]
            self.table(header, rows)

    def image(self, path: str, caption: str) -> None:
        self.blocks.append(("image", (path, caption)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "heading":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "paragraph":
                out.append(value)
            elif kind == "table":
                out.append(markdown_table(*value))
            else:
                out.append(f"![{value[1]}]({value[0]})")
        return "\n\n".join(out) + "\n"

    def rst(self, image_root: Path | None = None) -> str:
        """``image_root``: where image paths start; given, each image travels inside the text as a data URI
        (the Snakemake report is one file, wherever it is opened)."""
        underline = {1: "#", 2: "=", 3: "-", 4: "~"}
        out = []
        for kind, value in self.blocks:
            if kind == "heading":
                text = _rst_text(value[1])
                out.append(f"{text}\n{underline[value[0]] * max(len(text), 4)}")
            elif kind == "paragraph":
                out.append(_rst_text(value))
            elif kind == "table":
                header, rows = value
                lines = [".. list-table::", "   :header-rows: 1", ""]
                for row in [header, *rows]:
                    lines += [f"   {'*' if i == 0 else ' '} - {_rst_text(cell)}".rstrip() for i, cell in enumerate(row)]
                out.append("\n".join(lines))
            else:
                path, caption = value
                uri = _data_uri(image_root / path) if image_root is not None else path
                # docutils joins an image URI's lines: a data URI stays under its line-length limit
                lines = "\n   ".join(uri[i:i + 100] for i in range(0, len(uri), 100))
                out.append(f".. figure::\n   {lines}\n   :width: 100%\n   :alt: {path}\n\n   {_rst_text(caption)}")
        return "\n\n".join(out) + "\n"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _rst_text(text: str) -> str:
    """Text with markdown's **bold** and `code` as reStructuredText: other markup characters escaped."""
    parts = re.split(r"(\*\*[^*]+\*\*|`[^`]+`)", str(text))
    out = []
    for part in parts:
        if part.startswith("**") and part.endswith("**") and len(part) > 4:
            out.append(part)
        elif part.startswith("`") and part.endswith("`") and len(part) > 2:
            out.append(f"`{part}`")
        else:
            part = re.sub(r"([\\*|`@])", r"\\\1", part)  # "R@10" would read as an e-mail address
            out.append(re.sub(r"(?<=\w)_(?=\W|$)", r"\\_", part))  # a trailing underscore makes a reference
    return "".join(out)


def _number(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if _finite(value) else ""


def _signed(value: Any) -> str:
    return f"{round(value, 2) + 0.0:+.2f}" if _finite(value) else ""  # + 0.0: no "-0.00"


def _p(value: Any) -> str:
    return f"{value:.3g}" if _finite(value) else ""


def _interval(low: Any, high: Any) -> str:
    return f"[{round(low, 2) + 0.0:.2f}, {round(high, 2) + 0.0:.2f}]" if _finite(low) and _finite(high) else ""


def _survives(row: dict[str, Any]) -> str:
    return {True: "yes", False: "no"}.get(row.get("survives"), "")


def _pm(mean: Any, std: Any) -> str:
    if not _finite(mean):
        return ""
    return f"{mean:.2f} ± {std:.2f}" if _finite(std) else f"{mean:.2f}"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _direction(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def answer_document(study: Study, results: Sequence[dict[str, Any]], settings: dict[str, Any]) -> Document:
    """The question, per benchmark its primary metric's table, the pair effects, the forest plot and the
    planning power."""
    statistics = study.settings
    reference = statistics["reference"] or ""
    confidence = int(round(100 * float(statistics["confidence"])))
    adjustment = ADJUSTMENT_LABELS[statistics["adjustment"]]
    doc = Document()
    doc.heading(2, "The answer")
    doc.paragraph(f"**The question.** {QUESTION}")
    primaries = ", ".join(f"{label(m)} ({b})" for b, m in sorted(study.primary.items())) or "none scored"
    doc.paragraph(
        f"Primary metrics: {primaries}. Intervals: {confidence}% {INTERVAL_LABELS[statistics['interval']]}; with one "
        f"seed, over the queries only. p: {TEST_LABELS[statistics['interval']]}. p ({adjustment}): adjusted over "
        f"the primary family, every test of a primary metric in this section ({study.family_sizes.get(PRIMARY, 0)} "
        f"tests: each experiment against {reference or 'no reference'}, each pair effect and space effect); "
        f"survives: adjusted p at most {statistics['alpha']}."
        + (f" Secondary metrics form their own family ({study.family_sizes[SECONDARY]} tests, below)."
           if study.family_sizes.get(SECONDARY) else ""))
    benchmarks = benchmark_settings(settings)
    for benchmark, metric in sorted(study.primary.items()):
        rows = [r for r in study.rows if r["benchmark"] == benchmark and r["metric"] == metric]
        doc.heading(3, f"{benchmark}: {label(metric)} ({_direction(metric)})")
        doc.paragraph(size_line(rows))
        if any(r.get("aggregate") == GROUP_MEAN for r in rows):
            doc.paragraph(GROUP_MEAN_NOTE)
        doc.table(answer_header(metric, confidence, reference, adjustment),
                  [answer_cells(r) for r in rows] + published_rows(benchmarks.get(benchmark), [metric], 9, 2))
        unscored = sorted({r["experiment"] for r in results if r["benchmark"] == benchmark and not r.get("metrics")})
        if unscored:
            doc.paragraph("Not scored (no text branch trained): " + ", ".join(unscored) + ".")
    doc.heading(3, "Pair effects")
    doc.paragraph(
        "The effect of adding a pair: the mean, over every two experiments that differ by that pair alone (same "
        "space and settings, both scored), of their paired difference in the primary metric, in points "
        "(contrasts: experiment-reference). Space rows: per_pair or fac against shared on the same pairs. "
        "docs/statistics.md works an example.")
    if study.effects:
        doc.table(["benchmark", "metric", "pair", "effect", f"{confidence}% CI", "p", f"p ({adjustment})",
                   "survives", "contrasts"],
                  [[r["benchmark"], label(r["metric"]), r["pair"], _signed(r["effect"]),
                    _interval(r["ci_low"], r["ci_high"]), _p(r["p_value"]), _p(r.get("p_adjusted")), _survives(r),
                    r["contrasts"].replace(";", "; ")] for r in study.effects])
    else:
        doc.paragraph("No two scored experiments differ by one pair (or by the space) alone: no effect to estimate.")
    doc.image(f"plots/{FOREST}", "Pair effects (red) and differences from the reference (blue) with their "
              f"{confidence}% intervals, one panel per benchmark; filled: survives the {adjustment} adjustment.")
    power_section(doc, study)
    return doc


def size_line(rows: Sequence[dict[str, Any]]) -> str:
    """How many queries and seeds a benchmark's numbers rest on, with a warning when they are very few."""
    queries = sorted({int(r["n_queries"]) for r in rows if r.get("n_queries")})
    seeds = sorted({int(r["n_seeds"]) for r in rows if r.get("n_seeds")})
    if not queries:
        return ""
    line = (f"Queries: {'-'.join(map(str, dict.fromkeys([queries[0], queries[-1]])))}; seeds per experiment: "
            f"{'-'.join(map(str, dict.fromkeys([seeds[0], seeds[-1]])))}.")
    if queries[0] < FEW_QUERIES:
        line += " So few queries make every interval and test here rough."
    return line


def answer_header(metric: str, confidence: int, reference: str, adjustment: str) -> list[str]:
    return ["experiment", "seeds", f"{label(metric)} mean ± std", f"{confidence}% CI", f"Δ vs {reference or '-'}",
            f"Δ {confidence}% CI", "p", f"p ({adjustment})", "survives"]


def answer_cells(row: dict[str, Any]) -> list[Any]:
    """One experiment's row of the answer table (statistics.csv's row, formatted)."""
    return [row["experiment"], row["n_seeds"], _pm(row.get("mean"), row.get("std")),
            _interval(row.get("ci_low"), row.get("ci_high")), _signed(row.get("difference")),
            _interval(row.get("diff_low"), row.get("diff_high")), _p(row.get("p_value")), _p(row.get("p_adjusted")),
            _survives(row)]


def power_section(doc: Document, study: Study) -> None:
    statistics = study.settings
    doc.heading(3, "How many seeds and queries")
    if not study.power:
        doc.paragraph("No planning power: it needs two experiments scored on the same queries (a mean metric).")
        return
    scales = list(statistics["planning_scales"])
    level = study.power[0]["level"]
    doc.paragraph(
        f"The smallest true difference in each primary metric that a run like this one detects with "
        f"{statistics['power']:.0%} power (two-sided, at {statistics['alpha']} / {max(study.family_sizes[PRIMARY], 1)} "
        f"= {level:.3g}, the Bonferroni level the adjustment's strictest step uses), from the seed, query and "
        "residual variance of the paired differences the study measured, and with more seeds or queries. "
        "With one seed the seed variance is unknown: more seeds cannot be planned, and the numbers are lower "
        "bounds. power.csv holds the standard deviations.")
    header = ["benchmark", "metric", "seeds x queries", "MDD now", *(f"{s}x seeds" for s in scales),
              *(f"{s}x queries" for s in scales)]
    doc.table(header[:MAX_COLUMNS], [
        [r["benchmark"], label(r["metric"]), f"{r['n_seeds']} x {r['n_queries']:g}", _number(r["mdd"]),
         *(_number(r[f"mdd_seeds_x{s}"]) for s in scales), *(_number(r[f"mdd_queries_x{s}"]) for s in scales)
         ][:MAX_COLUMNS] for r in study.power])


def benchmark_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return dict(settings.get("benchmarks") or {})


def published_rows(spec: dict[str, Any] | None, metrics: Sequence[str], width: int, value_column: int) -> list[list]:
    """MCN's published number of each of ``metrics`` as table rows (the value in ``value_column``)."""
    published = PUBLISHED.get(((spec or {}).get("reader"), (spec or {}).get("task")))
    rows = []
    for metric in metrics:
        if published and metric in published["metrics"]:
            row = [""] * width
            row[0], row[value_column] = published["label"], published["metrics"][metric]
            if value_column > 2:
                row[1] = label(metric)
            rows.append(row)
    return rows


def per_seed_document(doc: Document, results: Sequence[dict[str, Any]]) -> None:
    """Every experiment's design, then per benchmark every seed's metrics."""
    doc.heading(2, "Per seed")
    doc.paragraph("Retrieval metrics are in percent (R@K) and ranks (MedR, MeanR); localization metrics in percent. "
                  "Queries whose clip has no features (n_missing) count as failures, or, where a benchmark's "
                  "convention is `present`, are left out; the other convention's columns are marked (present) / "
                  "(failures).")
    designs = {}
    for r in results:
        designs.setdefault(r["experiment"], [r.get("pairs") or [], r.get("space", ""), set()])[2].add(r.get("seed", ""))
    doc.table(["experiment", "pairs", "space", "seeds"],
              [[name, pairs, space, ", ".join(map(str, sorted(seeds, key=str)))]
               for name, (pairs, space, seeds) in sorted(designs.items())])
    for benchmark in sorted({r["benchmark"] for r in results}):
        rows = [r for r in results if r["benchmark"] == benchmark]
        names = metric_names(rows)
        task = rows[0].get("task", "")
        doc.heading(3, f"{benchmark} ({task})")
        doc.paragraph(protocol_line(rows))
        sizes = sorted({int(r["n_queries"]) for r in rows if r.get("n_queries")})
        if sizes:
            doc.paragraph("Queries: " + ", ".join(map(str, sizes)) + ".")
        keys = ["experiment", "seed", "scoring"]
        key_rows = [[r["experiment"], r.get("seed", ""), r.get("scoring", "")] for r in rows]
        doc.wide_table(keys, key_rows, [label(n) for n in names], [[r["metrics"].get(n) for n in names] for r in rows],
                       ["n_missing"], [[r.get("n_missing")] for r in rows])
        others = convention_columns(rows)
        if others:
            doc.wide_table(keys[:2], [k[:2] for k in key_rows], [_convention_label(n) for n in others],
                           [[other_conventions(r).get(n) for n in others] for r in rows])
        notes = [f"{r['experiment']} seed {r.get('seed', '')}: {r['note']}" for r in rows if r.get("note")]
        if notes:
            doc.paragraph("Notes: " + "; ".join(notes) + ".")
        if task == "retrieval":
            for n_queries in sizes:
                doc.paragraph(chance_line(n_queries))


def secondary_document(doc: Document, study: Study, settings: dict[str, Any]) -> None:
    """Every metric but the primary ones: mean ± std over seeds, interval and test, long format."""
    statistics = study.settings
    confidence = int(round(100 * float(statistics["confidence"])))
    adjustment = ADJUSTMENT_LABELS[statistics["adjustment"]]
    rows = [r for r in study.rows if r.get("family") == SECONDARY]
    if not rows:
        return
    doc.heading(2, "Secondary metrics")
    doc.paragraph(f"mean ± std over seeds; {confidence}% {INTERVAL_LABELS[statistics['interval']]}; Δ and p: against "
                  f"{statistics['reference'] or 'no reference'}, {TEST_LABELS[statistics['interval']]}; p "
                  f"({adjustment}): adjusted over the secondary family (every test of a secondary metric, "
                  f"{study.family_sizes.get(SECONDARY, 0)} tests).")
    benchmarks = benchmark_settings(settings)
    for benchmark in sorted({r["benchmark"] for r in rows}):
        mine = [r for r in rows if r["benchmark"] == benchmark]
        doc.heading(3, benchmark)
        if any(r.get("aggregate") == GROUP_MEAN for r in mine):
            doc.paragraph(GROUP_MEAN_NOTE)
        metrics = list(dict.fromkeys(r["metric"] for r in mine))
        table = [[r["experiment"], label(r["metric"]), r["n_seeds"], _pm(r.get("mean"), r.get("std")),
                  _interval(r.get("ci_low"), r.get("ci_high")), _signed(r.get("difference")), _p(r.get("p_value")),
                  _p(r.get("p_adjusted")), _survives(r)]
                 for r in sorted(mine, key=lambda r: (metrics.index(r["metric"]), r["experiment"]))]
        table += published_rows(benchmarks.get(benchmark), metrics, 9, 3)
        doc.table(["experiment", "metric", "seeds", "mean ± std", f"{confidence}% CI",
                   f"Δ vs {statistics['reference'] or '-'}", "p", f"p ({adjustment})", "survives"], table)


def survival_document(doc: Document, survival: Sequence[Path]) -> None:
    """Each corpus's download survival: the statuses that occurred, then the total and survival rows."""
    for path in survival:
        with open(path, encoding="utf-8", newline="") as handle:
            table = list(csv.reader(handle, delimiter="\t"))
        doc.heading(2, f"Download survival: {Path(path).parent.name}")
        if not table:
            continue
        header, rows = table[0], table[1:]
        status = header.index("status") if "status" in header else None
        videos = header.index("videos") if "videos" in header else None
        if status is not None and videos is not None:
            rows = [r for r in rows if r[status] in SURVIVAL_TOTALS or _count(r[videos]) > 0]
        doc.table(header, rows)


def _count(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 1.0  # not a count: keep the row


def summary_document(study: Study, results: Sequence[dict[str, Any]], survival: Sequence[Path],
                     settings: dict[str, Any]) -> Document:
    """summary.md: the answer first, then every seed, the secondary metrics and the download survival."""
    doc = Document()
    doc.heading(1, "mcnflow results")
    doc.blocks += answer_document(study, results, settings).blocks
    per_seed_document(doc, results)
    secondary_document(doc, study, settings)
    survival_document(doc, survival)
    return doc


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


def _palette(count: int) -> list:
    """``count`` distinct colours: matplotlib's tab10, tab20, then evenly spaced hues."""
    from matplotlib import colormaps
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["hsv"](i / count) for i in range(count)]


LINE_STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2))]


def plot_training(path: Path, logs: Sequence[tuple[str, str | None, dict[str, Any]]]) -> None:
    """One panel per loss term (total first): each (experiment, seed) run's per-step values (per-epoch
    means when a log has no step rows); one colour per experiment, one line style per seed."""
    plt = _pyplot()
    figure = training_figure(logs)
    _save(figure, path)
    plt.close(figure)


def training_figure(logs: Sequence[tuple[str, str | None, dict[str, Any]]]):
    """The figure of :func:`plot_training`."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    series = [(experiment, seed, curve["terms"] or curve["epoch_terms"]) for experiment, seed, curve in logs]
    terms = list(dict.fromkeys(term for _, _, by_term in series for term in by_term))
    experiments = sorted({experiment for experiment, _, by_term in series if by_term})
    seeds = sorted({str(seed) for _, seed, by_term in series if by_term}, key=lambda s: (len(s), s))
    colours = dict(zip(experiments, _palette(len(experiments))))
    styles = {seed: LINE_STYLES[i % len(LINE_STYLES)] for i, seed in enumerate(seeds)}
    columns = min(max(len(terms), 1), 2)
    rows = max(1, math.ceil(len(terms) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns + 2.5, 3.2 * rows), squeeze=False)
    x_names = sorted({curve["x"] for _, _, curve in logs})
    for index, ax in enumerate(axes.flat):
        if index >= len(terms):
            ax.set_visible(bool(terms))
            continue
        term = terms[index]
        for experiment, seed, by_term in series:
            if term in by_term:
                xs, ys = by_term[term]
                ax.plot(xs, ys, color=colours[experiment], linestyle=styles[str(seed)], linewidth=1.0, alpha=0.85)
        ax.set_title(term if term != LOSS_COLUMNS[0] else "total (the weighted sum)")
        ax.set_xlabel(" / ".join(x_names) or "step")
    if not terms:
        axes.flat[0].text(0.5, 0.5, "no training log rows", ha="center", va="center", transform=axes.flat[0].transAxes)
    else:
        handles = [Line2D([], [], color=colours[e], label=e) for e in experiments]
        handles += [Line2D([], [], color="black", linestyle=styles[s], label=f"seed {s}") for s in seeds if s != "None"]
        figure.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 0.98))
    figure.suptitle("Training losses: one colour per experiment, one line style per seed")
    figure.tight_layout()
    return figure


def forest_entries(study: Study, benchmark: str) -> list[tuple[str, float, float, float, bool | None, str]]:
    """(label, value, low, high, survives, colour) of a benchmark's pair effects, then its experiments'
    differences from the reference, on its primary metric."""
    metric = study.primary.get(benchmark)
    entries = [(f"+{r['pair']}" if r["kind"] == "pair" else r["pair"], r["effect"], r["ci_low"], r["ci_high"],
                r.get("survives"), PAIR_COLOR) for r in study.effects if r["benchmark"] == benchmark]
    entries += [(f"{r['experiment']} - {r['reference']}", r["difference"], r.get("diff_low"), r.get("diff_high"),
                 r.get("survives"), DIFFERENCE_COLOR)
                for r in study.rows if r["benchmark"] == benchmark and r["metric"] == metric and _finite(r.get("difference"))]
    return [e for e in entries if _finite(e[1])]


def plot_forest(path: Path, study: Study) -> None:
    """One panel per benchmark: each pair effect (red) and each experiment's difference from the reference
    (blue) on the primary metric, a point and its interval; filled when it survives the adjustment."""
    plt = _pyplot()
    from matplotlib.lines import Line2D
    panels = [(b, forest_entries(study, b)) for b in sorted(study.primary)]
    panels = [(b, entries) for b, entries in panels if entries]
    heights = [0.32 * len(entries) + 0.9 for _, entries in panels] or [1.5]
    figure, axes = plt.subplots(len(heights), 1, figsize=(8.0, sum(heights) + 0.8), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for ax, (benchmark, entries) in zip(axes[:, 0], panels):
        ys = np.arange(len(entries))[::-1]
        for y, (name, value, low, high, survives, colour) in zip(ys, entries):
            low = value if not _finite(low) else low
            high = value if not _finite(high) else high
            ax.errorbar([value], [y], xerr=[[value - low], [high - value]], fmt="o", color=colour, capsize=3,
                        markerfacecolor=colour if survives else "white", markersize=6, linewidth=1.5)
        ax.axvline(0.0, color="black", linestyle="--", linewidth=0.8)
        ax.set_yticks(ys, [e[0] for e in entries])
        metric = study.primary[benchmark]
        ax.set_title(f"{benchmark}: Δ {label(metric)} ({_direction(metric)})", fontsize="medium")
        ax.set_ylim(-0.7, len(entries) - 0.3)
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no tested comparison", ha="center", va="center", transform=axes[0, 0].transAxes)
        axes[0, 0].set_axis_off()
    else:
        axes[-1, 0].set_xlabel("difference in points")
        handles = [Line2D([], [], color=PAIR_COLOR, marker="o", linestyle="", label="pair / space effect"),
                   Line2D([], [], color=DIFFERENCE_COLOR, marker="o", linestyle="", label="experiment - reference"),
                   Line2D([], [], color="gray", marker="o", linestyle="", markerfacecolor="white",
                          label="does not survive the adjustment")]
        axes[0, 0].legend(handles=handles, fontsize="small", loc="lower left", bbox_to_anchor=(0.0, 1.12), ncol=3)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)


def plot_survival(path: Path, survival_paths: Sequence[str | Path]) -> None:
    """One stacked bar per corpus (survival.tsv files of ``mcnflow survival``): the share of its videos
    that survived, are gone (one segment per kind), were blocked, never tried, not yet there, failed, given up
    (retry budget spent: never counted as gone) or skipped."""
    from mcnflow.core.status import DOWNLOAD_OUTCOMES, DOWNLOAD_PERMANENT, DownloadOutcome, DownloadStatus
    plt = _pyplot()
    gone = [str(s) for s in DOWNLOAD_PERMANENT]
    segments = [("survived", "#2e7d32"), *[(f"gone: {kind}", color) for kind, color in
                zip(gone, ("#c62828", "#e65100", "#ad1457", "#f9a825", "#6d4c41"))],
                ("blocked (answers about us)", "#5e35b1"), ("never tried", "#9e9e9e"), ("not yet", "#1e88e5"),
                ("failed", "#37474f"), ("given up (budget spent, not known gone)", "#ff8f00"),
                ("skipped", "#cfd8dc")]
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
                    DownloadOutcome.NOT_YET: "not yet", DownloadOutcome.SKIPPED: "skipped",
                    DownloadOutcome.GIVEN_UP: "given up (budget spent, not known gone)"}.get(outcome, "failed")
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
    """``settings``: the summarize stage's (statistics settings, each benchmark's corpus reader and,
    optionally, each experiment's entry)."""
    out_dir = Path(out_dir)
    settings = dict(settings or {"statistics": {}, "benchmarks": {}})  # statistics: the schema's defaults
    results = read_results(metric_paths)
    metrics = metric_names(results)
    written: dict[str, Path] = {}

    columns = [*ID_COLUMNS, *metrics, *COUNT_COLUMNS, *PROTOCOL_COLUMNS, *convention_columns(results), "note"]
    written["csv"] = out_dir / "summary.csv"
    write_csv(written["csv"], summary_rows(results, metrics), columns)

    found = study(results, settings.get("statistics"), settings.get("experiments"))
    written["statistics"] = out_dir / "statistics.csv"
    write_csv(written["statistics"], found.rows, STAT_COLUMNS)
    written["pair_effects"] = out_dir / "pair_effects.csv"
    write_csv(written["pair_effects"], found.effects, EFFECT_COLUMNS)
    written["power"] = out_dir / "power.csv"
    write_csv(written["power"], found.power, power_columns(found.settings))

    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    written["forest"] = plots / FOREST
    plot_forest(written["forest"], found)
    written["markdown"] = out_dir / "summary.md"
    with atomic_write(written["markdown"]) as handle:
        handle.write(summary_document(found, results, [Path(p) for p in survival_paths], settings).markdown())
    # the first page of the HTML report includes it (workflow/report/workflow.rst)
    written["answer"] = out_dir / "answer.rst"
    with atomic_write(written["answer"]) as handle:
        handle.write(answer_document(found, results, settings).rst(out_dir))

    for metric in metrics:
        written[metric] = plots / plot_file_name(metric)
        plot_metric(written[metric], metric, results)
    logs = sorted(((*branch_of_log(p), read_training_log(p)) for p in log_paths), key=lambda log: log[:2])
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
    print(f"pair effects: {written['pair_effects']}")
    print(f"planning power: {written['power']}")
    print(f"plots: {Path(args.out_dir) / 'plots'}")
    if args.survival:
        chart = Path(args.survival_chart or Path(args.out_dir) / "plots" / "download_survival.png")
        chart.parent.mkdir(parents=True, exist_ok=True)
        plot_survival(chart, args.survival)
        print(f"survival chart: {chart}")
    return 0
