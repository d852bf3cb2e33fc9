"""The HTML report's first page, as Snakemake renders it, opened in headless Chromium: the answer and the
forest plot are what a reader sees first."""

import json
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from docutils.core import publish_parts
from jinja2 import Environment
from matplotlib.image import imread

from mcnflow.cli import main as cli_main
from mcnflow.report import PAIR_COLOR

from workflow_utils import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make system-deps installs it)")
EXPERIMENTS = {"tv": ["tv"], "ta": ["ta"], "tv_ta": ["tv", "ta"], "tv_va": ["tv", "va"], "ta_va": ["ta", "va"],
               "tv_ta_va": ["tv", "ta", "va"]}


def _summarize(workdir):
    """A finished study's results/ under ``workdir``: six experiments x two seeds on 40 queries."""
    rng = np.random.default_rng(2)
    keys = [f"{i}:v{i}" for i in range(40)]
    paths = []
    for experiment, pairs in EXPERIMENTS.items():
        rate = 0.2 + 0.25 * ("tv" in pairs) + 0.1 * ("ta" in pairs) + 0.05 * ("va" in pairs)
        for seed in (1, 2):
            values = ((rng.random(40) < rate) * 100.0).tolist()
            record = {"experiment": experiment, "seed": seed, "pairs": pairs, "space": "shared",
                      "benchmark": "youcook2_retrieval", "task": "retrieval", "scoring": "t.v",
                      "metrics": {"recall_at_10": float(np.mean(values))}, "n_queries": 40, "n_missing": 0,
                      "per_query": {"keys": keys, "values": {"recall_at_10": values},
                                    "aggregate": {"recall_at_10": "mean"}}}
            path = workdir / "results" / "eval" / experiment / f"seed-{seed}" / "youcook2_retrieval.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(record))
            paths.append(path)
    settings = {"statistics": {"reference": "tv_ta_va", "resamples": 999},
                "benchmarks": {"youcook2_retrieval": {"task": "retrieval", "corpus": "youcook2", "reader": "youcook2"}}}
    assert cli_main(["summarize", "--metrics", *map(str, paths), "--out-dir", str(workdir / "results"),
                     "--settings", json.dumps(settings)]) == 0


def _first_page(workdir, monkeypatch) -> str:
    """workflow/report/workflow.rst rendered the way `snakemake --report` renders the workflow description
    (Jinja with trim_blocks / lstrip_blocks, then docutils' html_body), from the workdir."""
    monkeypatch.chdir(workdir)
    text = (REPO / "workflow" / "report" / "workflow.rst").read_text()
    snakemake = SimpleNamespace(config={"experiments": EXPERIMENTS})
    files = [SimpleNamespace(target="statistics.csv"), SimpleNamespace(target="summary.csv")]
    rendered = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text).render(
        snakemake=snakemake, categories={}, files=files)
    body = publish_parts(rendered, writer="html")["html_body"]  # Snakemake passes writer_name (deprecated)
    return f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body}</body></html>'


def test_the_first_page_shows_the_answer_and_the_forest_plot(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    _summarize(workdir)
    html = _first_page(workdir, monkeypatch)
    # the answer opens the page, the forest plot travels inside it
    assert html.index("The answer") < html.index("The question.") < html.index("Pair effects")
    assert html.index("Pair effects") < html.index('alt="plots/forest.png"') < html.index("mcnflow pre-trains MCN")
    assert 'src="data:image/png;base64,' in html
    page = tmp_path / "first_page.html"
    page.write_text(html, encoding="utf-8")
    screenshot = tmp_path / "first_page.png"
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--no-first-run",
                             f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={screenshot}",
                             "--window-size=1200,2000", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert screenshot.is_file(), result.stderr[-2000:]
    pixels = (imread(screenshot)[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (2000, 1200)
    # not blank: text and tables darken a good part of the page
    assert (pixels.min(axis=-1) < 128).mean() > 0.01 and pixels.std() > 20
    # the forest plot is on screen: its pair effects' red, which nothing else on the page uses
    red = np.array([int(PAIR_COLOR[i:i + 2], 16) for i in (1, 3, 5)])
    assert int((np.abs(pixels - red).max(axis=-1) <= 12).sum()) > 200
