"""The whole demo through the real Snakemake workflow: download -> report, then rerun semantics.

One session-scoped run (a few minutes on 2 cores) feeds every test here.
"""

import csv
import re
import time

import pytest
import yaml

from mcnflow.core.ledger import DOWNLOAD_STATUSES, read_ledger
from mcnflow.features.store import ShardReader, is_complete
from mcnflow.features.word2vec import read_word_vectors

from workflow_utils import copy_workflow, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("demo_e2e"))
    # a port of its own, so a `make demo` running meanwhile does not collide
    demo_cfg = yaml.safe_load((workdir / "demo/config.yaml").read_text())
    demo_cfg["demo"]["port"] = 18777
    for spec in demo_cfg["corpora"].values():
        if "url_template" in spec:
            spec["url_template"] = spec["url_template"].replace("18765", "18777")
    (workdir / "demo/config.yaml").write_text(yaml.safe_dump(demo_cfg, sort_keys=False))
    started = time.monotonic()
    result = snakemake(workdir, "--profile", "profiles/local")
    (workdir / "run-seconds.txt").write_text(f"{time.monotonic() - started:.0f}\n")  # the demo's time, to compare
    (workdir / "run-output.txt").write_text(result.stdout + result.stderr)
    return workdir


def _ledger(workdir, stage, corpus):
    rows = {}
    for path in sorted((workdir / f"results/{stage}/{corpus}").glob("shard-*.tsv")):
        rows.update({r["video_id"]: r for r in read_ledger(path)})
    return rows


def test_download_ledgers_show_survival_handling(demo_run):
    rows = _ledger(demo_run, "download", "howto100m")
    assert len(rows) == 16
    assert rows["demo0000003"]["status"] == rows["demo0000011"]["status"] == "unavailable"
    assert rows["demo0000005"]["status"] == "ok" and int(rows["demo0000005"]["attempts"]) == 2
    assert sum(r["status"] == "ok" for r in rows.values()) == 14
    survival = {r["status"]: r for r in csv.DictReader(open(demo_run / "results/download/howto100m/survival.tsv"),
                                                         delimiter="\t")}
    # every status is listed, zeros included, with the demo's counts
    assert set(DOWNLOAD_STATUSES) <= set(survival), sorted(set(DOWNLOAD_STATUSES) - set(survival))
    assert int(survival["ok"]["videos"]) == 14 and int(survival["unavailable"]["videos"]) == 2
    assert int(survival["private"]["videos"]) == 0


def test_normalized_shards(demo_run):
    rows = _ledger(demo_run, "normalize", "howto100m")
    assert rows["demo0000003"]["status"] == "not_downloaded"
    assert rows["demo0000007"]["status"] == "ok" and rows["demo0000007"]["has_audio"] == "false"
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 14
    assert all((r["width"], r["height"]) == ("454", "256") and float(r["fps"]) == 30 for r in ok)
    msrvtt = _ledger(demo_run, "normalize", "msrvtt")
    assert all(r["status"] == "ok" for r in msrvtt.values()) and len(msrvtt) == 12


def test_features_are_complete_hdf5(demo_run):
    for corpus in ("howto100m", "youcook2", "msrvtt", "crosstask"):
        for modality in ("video", "audio", "text"):
            files = sorted((demo_run / f"results/features/{corpus}/{modality}").glob("shard-*.h5"))
            assert files and all(is_complete(f) for f in files), (corpus, modality)
    word2vec = read_word_vectors(demo_run / "results/features/word2vec.h5")
    assert word2vec.attrs["source"] == "train" and word2vec.attrs["train_corpus"] == "howto100m"
    # every text shard of every corpus carries vectors from that one source
    for corpus in ("howto100m", "youcook2", "msrvtt", "crosstask"):
        for path in (demo_run / f"results/features/{corpus}/text").glob("shard-*.h5"):
            assert ShardReader(path).attrs["word2vec_fingerprint"] == word2vec.fingerprint, path


def test_summary_shows_retrieval_far_above_chance(demo_run):
    rows = list(csv.DictReader(open(demo_run / "results/summary.csv")))
    experiments = {r["experiment"] for r in rows}
    assert {"tv_ta_va", "tv", "va", "tv_ta_va_per_pair"} <= experiments
    youcook = {r["experiment"]: r for r in rows if r["benchmark"] == "youcook2_retrieval"}
    assert {r["seed"] for r in rows if r["experiment"] == "tv_ta_va"} == {"1", "2"}
    n_queries = int(youcook["tv_ta_va"]["n_queries"])
    chance_r10 = 100 * 10 / n_queries  # every query has exactly one right clip among n_queries
    assert n_queries == 32 and int(youcook["tv_ta_va"]["n_missing"]) == 0
    # R@10 averaged over the two seeds (statistics.csv). Measured with MCN's defaults (only detached
    # reconstruction targets switched on): tv 92.2, tv_ta_va 98.4, per_pair 100, ta 67.2 against 31.25
    # chance; R@1: per_pair 53.1, tv_ta_va 39.1, tv 21.9 against 3.1. Text-video alone learns too.
    stats = {(r["experiment"], r["metric"]): r for r in csv.DictReader(open(demo_run / "results/statistics.csv"))
             if r["benchmark"] == "youcook2_retrieval"}
    r10 = {name: float(r["mean"]) for (name, metric), r in stats.items() if metric == "recall_at_10"}
    r1 = {name: float(r["mean"]) for (name, metric), r in stats.items() if metric == "recall_at_1"}
    assert r10["tv"] >= 2 * chance_r10, r10
    assert r10["tv_ta_va"] >= 2 * chance_r10, r10
    # every experiment that trains a text branch retrieves above chance, not just the two above
    text_trained = {name for name, r in youcook.items() if r["recall_at_10"] != ""}
    assert len(text_trained) >= 6 and text_trained <= set(r10), (text_trained, r10)
    assert all(r10[name] > chance_r10 for name in text_trained), r10
    assert max(r1.values()) >= 5 * 100 / n_queries, r1
    stats = {name: r for (name, metric), r in stats.items() if metric == "recall_at_10"}
    # every comparison comes with its uncertainty: a CI, and a paired test against tv_ta_va
    assert all(r["ci_low"] != "" and r["ci_high"] != "" for r in stats.values())
    assert all(r["p_value"] != "" for name, r in stats.items() if name != "tv_ta_va")
    assert "tv_ta_va_fac" in stats
    # a model without a trained text branch is reported, not scored
    assert youcook["va"]["recall_at_10"] == "" and "not trained" in youcook["va"]["note"]
    # CrossTask-format benchmark: step recall is reported for every text-trained experiment
    crosstask = {r["experiment"]: r for r in rows if r["benchmark"] == "crosstask"}
    assert crosstask["tv_ta_va"]["crosstask_recall"] != "" and int(crosstask["tv_ta_va"]["n_missing"]) == 0
    # the step-localization benchmarks carry the same uncertainty as retrieval (issue 20)
    localization = [r for r in csv.DictReader(open(demo_run / "results/statistics.csv"))
                    if r["benchmark"] in ("crosstask", "mining_youtube")]
    assert {r["benchmark"] for r in localization} == {"crosstask", "mining_youtube"}
    assert all(r["ci_low"] != "" and r["ci_high"] != "" for r in localization if r["mean"] != "")
    assert all(r["p_value"] != "" for r in localization if r["mean"] != "" and r["experiment"] != "tv_ta_va")
    assert (demo_run / "results/summary.md").exists()
    assert list((demo_run / "results/plots").glob("*.png"))


def test_the_answer_comes_first_with_pair_effects(demo_run):
    """Issue 22: every pair's effect on every benchmark (two contrasts or more on YouCook2 retrieval), each the
    mean of its contrasts' differences in summary.csv's seed means; adjusted p-values beside every p-value;
    summary.md and the HTML report open with the answer and the forest plot; mcnflow estimate plans seeds."""
    import subprocess
    import sys

    from workflow_utils import snakemake as run_snakemake

    summary = list(csv.DictReader(open(demo_run / "results/summary.csv")))
    experiments = {r["experiment"] for r in summary}
    effects = list(csv.DictReader(open(demo_run / "results/pair_effects.csv")))
    statistics = list(csv.DictReader(open(demo_run / "results/statistics.csv")))
    for benchmark in {r["benchmark"] for r in statistics if r["family"] == "primary"}:
        pairs = {r["pair"]: r for r in effects if r["benchmark"] == benchmark and r["kind"] == "pair"}
        assert set(pairs) == {"tv", "ta", "va"}, (benchmark, pairs)
    youcook = {r["pair"]: r for r in effects if r["benchmark"] == "youcook2_retrieval" and r["kind"] == "pair"}
    assert all(int(r["n_contrasts"]) >= 2 for r in youcook.values()), youcook
    assert {r["pair"] for r in effects if r["kind"] == "space"} >= {"per_pair vs shared", "fac vs shared"}

    def seed_mean(benchmark, experiment, metric):
        values = [float(r[metric]) for r in summary if r["benchmark"] == benchmark and r["experiment"] == experiment]
        return sum(values) / len(values)

    for row in effects:
        contrasts = [next((a, b) for a in experiments for b in experiments if f"{a}-{b}" == contrast)
                     for contrast in row["contrasts"].split(";")]
        differences = [seed_mean(row["benchmark"], a, row["metric"]) - seed_mean(row["benchmark"], b, row["metric"])
                       for a, b in contrasts]
        assert float(row["effect"]) == pytest.approx(sum(differences) / len(differences), abs=1e-6), row
    # an adjusted p-value beside every p-value, never smaller
    for row in [*statistics, *effects]:
        if row["p_value"] != "":
            assert row["p_adjusted"] != "" and float(row["p_adjusted"]) >= float(row["p_value"]) - 1e-12, row
    report = (demo_run / "results/summary.md").read_text()
    assert report.index("**The question.**") < report.index("### Pair effects") < report.index(
        "(plots/forest.png)") < report.index("## Per seed") < report.index("## Secondary metrics")
    assert (demo_run / "results/plots/forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert max(line.count("|") - 1 for line in report.splitlines() if line.startswith("|")) <= 9
    # the HTML report's first page (the workflow description) is the answer, the forest plot inside it
    run_snakemake(demo_run, "--report", "results/report.html")
    html = (demo_run / "results/report.html").read_text(encoding="utf-8")
    description = html[html.index("var workflow_desc"):]
    description = description[:description.index("</script>")]
    assert "<strong>The question.</strong>" in description and 'alt=\\"plots/forest.png\\"' in description
    # mcnflow estimate prints what a finished run could detect, per benchmark
    estimate = subprocess.run([sys.executable, "-m", "mcnflow", "estimate", "--config", "config.yaml",
                               "demo/config.yaml", "--profile", "profiles/local"], cwd=demo_run,
                              capture_output=True, text=True, timeout=300)
    assert estimate.returncode == 0, estimate.stderr[-2000:]
    planning = estimate.stdout.split("minimum detectable difference")[1]
    assert all(benchmark in planning for benchmark in {r["benchmark"] for r in effects}), planning


def _planned(output: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job in a dry run's output."""
    jobs, rule = set(), None
    for line in output.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if match:
            rule = match.group(1)
            jobs.add((rule, ""))
            continue
        wild = re.match(r"^wildcards: (.*)$", line.strip())
        if wild and rule:
            jobs.discard((rule, ""))
            jobs.add((rule, wild.group(1)))
    return jobs


def _dry_run(workdir, config_text=None):
    config_path = workdir / "demo/config.yaml"
    original = config_path.read_text()
    try:
        if config_text is not None:
            config_path.write_text(config_text)
        # --quiet host overrides the profile's `quiet: rules`, so the dry run lists every job
        result = snakemake(workdir, "-n", "--profile", "profiles/local", "--quiet", "host")
    finally:
        config_path.write_text(original)
    return _planned(result.stdout + result.stderr)


def test_nothing_to_do_after_a_complete_run(demo_run):
    assert _dry_run(demo_run) == set()


def test_yaml_key_order_reruns_nothing(demo_run):
    cfg = yaml.safe_load((demo_run / "demo/config.yaml").read_text())
    reordered = {key: cfg[key] for key in reversed(list(cfg))}
    reordered["training"] = {key: cfg["training"][key] for key in reversed(list(cfg["training"]))}
    assert _dry_run(demo_run, yaml.safe_dump(reordered, sort_keys=False)) == set()


def test_changing_one_experiment_reruns_only_its_branch(demo_run):
    cfg = yaml.safe_load((demo_run / "demo/config.yaml").read_text())
    cfg["experiments"] = {**cfg["experiments"], "tv": {"pairs": ["tv"], "space": "shared",
                                                       "losses": {"reconstruction": {"enabled": True, "weight": 10.0}}}}
    jobs = _dry_run(demo_run, yaml.safe_dump(cfg, sort_keys=False))
    rules = {rule for rule, _ in jobs}
    assert rules == {"train", "evaluate", "summarize", "all"}, jobs
    assert {w for rule, w in jobs if rule == "train"} == {"experiment=tv, seed=1", "experiment=tv, seed=2"}
    assert all(w.startswith("experiment=tv,") for rule, w in jobs if rule == "evaluate")


def test_adding_an_experiment_runs_only_the_new_branch(demo_run):
    cfg = yaml.safe_load((demo_run / "demo/config.yaml").read_text())
    cfg["experiments"] = {**cfg["experiments"], "tv_ta_per_pair": {"pairs": ["tv", "ta"], "space": "per_pair"}}
    jobs = _dry_run(demo_run, yaml.safe_dump(cfg, sort_keys=False))
    assert {w for rule, w in jobs if rule == "train"} == {"experiment=tv_ta_per_pair, seed=1",
                                                          "experiment=tv_ta_per_pair, seed=2"}
    assert {rule for rule, _ in jobs} == {"train", "evaluate", "summarize", "all"}


def test_changing_feature_settings_reruns_features_and_everything_downstream(demo_run):
    cfg = yaml.safe_load((demo_run / "demo/config.yaml").read_text())
    cfg["features"]["audio"] = {"n_mels": 40, "fmin": 30}
    jobs = _dry_run(demo_run, yaml.safe_dump(cfg, sort_keys=False))
    rules = {rule for rule, _ in jobs}
    # one decode feeds every media feature: the media shards rerun (and the text shards, which read the
    # normalize ledger they rewrite); downloads, manifests and the word2vec source do not
    assert {"media_shard", "train", "evaluate", "summarize"} <= rules
    assert not {"download_shard", "word2vec", "manifest"} & rules
    # the one decode rewrites the video features too, so every branch retrains (the price of decoding
    # once: a media setting reruns the media shards and everything downstream of any of them)
    assert {w for rule, w in jobs if rule == "train"} == {f"experiment={e}, seed={s}"
                                                          for e in ("tv", "ta", "tv_ta", "tv_va", "ta_va",
                                                                    "tv_ta_va", "tv_ta_va_per_pair", "tv_ta_va_fac")
                                                          for s in (1, 2)} | {"experiment=va, seed=1"}


@pytest.mark.parametrize("section, key, value", [
    (("features", "video"), "batch_size", 8),
    (("features", "video"), "decode_workers", 2),
    (("training",), "num_workers", 2),
    (("evaluation",), "batch_size", 7),
    (("download",), "sleep_interval", 1.0),
])
def test_an_operational_knob_plans_zero_jobs(demo_run, section, key, value):
    # batch sizes of inference, worker counts and sleeps change speed, not a result: nothing reruns
    cfg = yaml.safe_load((demo_run / "demo/config.yaml").read_text())
    node = cfg
    for name in section:
        node = node.setdefault(name, {})
    node[key] = value
    if key == "sleep_interval":
        node["max_sleep_interval"] = value
    assert _dry_run(demo_run, yaml.safe_dump(cfg, sort_keys=False)) == set()


def test_changing_an_evaluation_corpus_never_retrains(demo_run):
    cfg = yaml.safe_load((demo_run / "demo/config.yaml").read_text())
    cfg["corpora"]["youcook2"]["limit"] = 6
    jobs = _dry_run(demo_run, yaml.safe_dump(cfg, sort_keys=False))
    rules = {rule for rule, _ in jobs}
    assert "evaluate" in rules and "manifest" in rules, jobs
    assert not {"train", "word2vec"} & rules, jobs
    assert all("corpus=youcook2" in w for rule, w in jobs if rule in ("manifest", "download_shard", "extract_text"))


def test_adding_a_benchmark_corpus_never_retrains(demo_run):
    cfg = yaml.safe_load((demo_run / "demo/config.yaml").read_text())
    cfg["corpora"]["youcook2_b"] = {**cfg["corpora"]["youcook2"], "reader": "youcook2", "source": "url",
                                    "id_kind": "youtube"}
    cfg["evaluation"]["benchmarks"]["youcook2_b_retrieval"] = {"task": "retrieval", "corpus": "youcook2_b"}
    jobs = _dry_run(demo_run, yaml.safe_dump(cfg, sort_keys=False))
    rules = {rule for rule, _ in jobs}
    assert {"manifest", "download_shard", "extract_text", "evaluate"} <= rules, jobs
    assert not {"train", "word2vec"} & rules, jobs
    assert all("benchmark=youcook2_b_retrieval" in w for rule, w in jobs if rule == "evaluate")


def test_no_output_line_over_1000_characters(demo_run):
    lines = (demo_run / "run-output.txt").read_text().splitlines()
    assert lines, "the run printed nothing"
    longest = max(lines, key=len)
    assert len(longest) <= 1000, longest[:300]


def test_hand_run_evaluate_with_config_matches_the_workflow(demo_run, tmp_path):
    """`mcnflow evaluate --config config.yaml demo/config.yaml` computes the workflow job's settings itself."""
    import json
    import subprocess
    import sys

    def shards(corpus, modality):
        return [str(p) for p in sorted((demo_run / f"results/features/{corpus}/{modality}").glob("shard-*.h5"))]

    for experiment, benchmark, corpus in (("tv_ta", "youcook2_retrieval", "youcook2"),
                                          ("tv_ta_va", "crosstask", "crosstask")):
        out = tmp_path / f"{experiment}-{benchmark}.json"
        command = [sys.executable, "-m", "mcnflow", "evaluate", "--experiment", experiment, "--seed", "2",
                   "--benchmark", benchmark, "--config", "config.yaml", "demo/config.yaml",
                   "--checkpoint", f"results/train/{experiment}/seed-2/model.pt",
                   "--manifest", f"results/manifest/{corpus}.tsv", "--video", *shards(corpus, "video"),
                   "--video3d", *shards(corpus, "video3d"),
                   "--audio", *shards(corpus, "audio"), "--text", *shards(corpus, "text"),
                   "--word2vec", "results/features/word2vec.h5", "--output", str(out)]
        subprocess.run(command, cwd=demo_run, check=True, capture_output=True, text=True, timeout=600)
        by_hand = json.loads(out.read_text())
        workflow = json.loads((demo_run / f"results/eval/{experiment}/seed-2/{benchmark}.json").read_text())
        assert by_hand == workflow
        assert by_hand["metrics"], by_hand


def test_hand_run_manifest_with_config_matches_the_workflow(demo_run, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "howto100m.tsv"
    subprocess.run([sys.executable, "-m", "mcnflow", "manifest", "--corpus", "howto100m", "--config", "config.yaml",
                    "demo/config.yaml", "--output", str(out)], cwd=demo_run, check=True, timeout=120)
    assert out.read_text() == (demo_run / "results/manifest/howto100m.tsv").read_text()


def test_adding_a_seed_runs_only_the_new_branches(demo_run):
    cfg = yaml.safe_load((demo_run / "demo/config.yaml").read_text())
    cfg["seeds"] = [*cfg["seeds"], 7]
    jobs = _dry_run(demo_run, yaml.safe_dump(cfg, sort_keys=False))
    assert {rule for rule, _ in jobs} == {"train", "evaluate", "summarize", "all"}, jobs
    assert all(w.endswith("seed=7") for rule, w in jobs if rule == "train")
    assert all(", seed=7," in w for rule, w in jobs if rule == "evaluate")
