"""Result settings vs operational settings (issue 20): a key marked ``x-operational`` in the schema
changes how fast a stage runs, never what it computes, so it never changes a settings digest (the
Snakemake rerun trigger); every other key of a stage's settings does."""

import copy

import pytest

from mcnflow.core.config import load_config, load_schema
from mcnflow.core.plan import OPERATIONAL, STAGES, Plan, result_settings, settings_digest

from conftest import REPO

CONFIG = load_config([REPO / "config.yaml"])
SCHEMA = load_schema()


def _leaves(node, path=()):
    """(path, schema node) of every key the config schema declares, nested sections walked."""
    for key, child in (node.get("properties") or {}).items():
        yield path + (key,), child
        if child.get("type") == "object" and child.get("properties"):
            yield from _leaves(child, path + (key,))


OPERATIONAL_KEYS = [path for path, child in _leaves(SCHEMA) if child.get(OPERATIONAL)]


def _stage_names(plan):
    """One instance of every stage's settings (a corpus, experiment, seed, benchmark each)."""
    corpus, experiment = plan.config["train_corpus"], next(iter(plan.experiments))
    benchmark = next(iter(plan.benchmarks))
    names = {"corpus": corpus, "experiment": experiment, "seed": str(plan.seeds(experiment)[0]),
             "benchmark": benchmark}
    for stage, (_, needed, _) in STAGES.items():
        if stage == "demo":
            continue
        yield stage, {name: names[name] for name in needed}


def _digests(config):
    plan = Plan(config)
    return {stage: settings_digest(stage, plan.settings(stage, **names)) for stage, names in _stage_names(plan)}


def _changed(value, node):
    """Another valid value for a schema node."""
    if "enum" in node:
        others = [v for v in node["enum"] if v != value]
        return others[0] if others else value
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, list):
        return [*value, {"proxy": "socks5://other:1080"}] if value == [] else value[:-1]
    if value is None:
        return "other"
    raise TypeError(value)


def _set(config, path, value):
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _get(config, path):
    node = config
    for key in path:
        node = node[key]
    return node


def _digests_around_a_change(path):
    """Every stage's digest before and after the config key at ``path`` takes another valid value."""
    config = copy.deepcopy(CONFIG)
    before = _digests(config)
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    _set(config, path, _changed(_get(config, path), node))
    return before, _digests(config)


def test_the_schema_marks_the_knobs_the_issue_names():
    marked = {".".join(path) for path in OPERATIONAL_KEYS}
    assert {"features.video.batch_size", "features.video.decode_workers", "features.video.device",
            "features.video3d.batch_size", "training.num_workers", "training.device", "evaluation.batch_size",
            "normalize.threads", "download.sleep_interval"} <= marked


@pytest.mark.parametrize("path", OPERATIONAL_KEYS, ids=[".".join(p) for p in OPERATIONAL_KEYS])
def test_an_operational_key_changes_no_digest(path):
    before, after = _digests_around_a_change(path)
    assert after == before


RESULT_KEYS = [("features", "video", "fps"), ("features", "video", "short_side"), ("features", "audio", "n_mels"),
               ("normalize", "crf"), ("training", "lr"), ("training", "batch_size"), ("training", "n_pair"),
               ("evaluation", "tie_policy"), ("download", "max_height"), ("download", "retry_budget", "attempts"),
               ("shard_size",), ("features", "text", "max_words")]


@pytest.mark.parametrize("path", RESULT_KEYS, ids=[".".join(p) for p in RESULT_KEYS])
def test_a_result_key_changes_the_digest_of_the_stages_that_read_it(path):
    before, after = _digests_around_a_change(path)
    assert [stage for stage in before if before[stage] != after[stage]], path


def test_the_settings_file_keeps_the_operational_values_under_the_same_name(tmp_path):
    from mcnflow.core.plan import settings_file
    import json
    config = copy.deepcopy(CONFIG)
    first = settings_file("evaluate", Plan(config).settings("evaluate", experiment=next(iter(config["experiments"])),
                                                             seed="1", benchmark=next(iter(config["evaluation"]["benchmarks"]))),
                          tmp_path)
    config["evaluation"]["batch_size"] += 3
    second = settings_file("evaluate", Plan(config).settings("evaluate", experiment=next(iter(config["experiments"])),
                                                              seed="1", benchmark=next(iter(config["evaluation"]["benchmarks"]))),
                           tmp_path)
    assert first == second
    assert json.loads(open(second).read())["batch_size"] == config["evaluation"]["batch_size"]
    assert "batch_size" not in result_settings("evaluate", json.loads(open(second).read()))


def test_the_config_reference_lists_every_operational_key():
    text = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [".".join(path) for path in OPERATIONAL_KEYS if f"`{'.'.join(path)}`" not in text]
    assert not missing, f"docs/settings.md lacks {missing}"
