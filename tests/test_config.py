import copy

import pytest

from mcnflow.core.config import ConfigError, canonical_json, load_config, load_yaml, validate_config


@pytest.fixture
def base(repo_root):
    return load_yaml(repo_root / "config.yaml")


def test_real_and_demo_configs_validate(repo_root):
    config = load_config([repo_root / "config.yaml", repo_root / "demo/config.yaml"])
    assert config["features"]["video"]["weights"] == "none"
    assert config["training"]["lr"] == 3.0e-3
    real = load_config([repo_root / "config.yaml"])
    # the seed's settings
    assert real["normalize"]["width"] == 454 and real["normalize"]["height"] == 256 and real["normalize"]["fps"] == 30
    assert real["training"]["lr"] == 1e-4 and real["training"]["batch_size"] == 128 and real["training"]["epochs"] == 30
    assert real["training"]["optimizer"] == "adam"
    assert len(real["experiments"]) >= 7


def test_enum_error_names_key_and_allowed_values(base):
    base["normalize"]["resize_mode"] = "zoom"
    with pytest.raises(ConfigError) as err:
        validate_config(base)
    assert "normalize.resize_mode" in str(err.value) and "'pad', 'crop', 'stretch'" in str(err.value)


def test_unknown_key_is_named(base):
    base["training"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"training.*learning_rate"):
        validate_config(base)


def test_bad_pair_and_empty_pairs(base):
    bad = copy.deepcopy(base)
    bad["experiments"]["x"] = {"pairs": ["tv", "vt"]}
    with pytest.raises(ConfigError, match=r"experiments.x.pairs.1.*'tv', 'ta', 'va'"):
        validate_config(bad)
    empty = copy.deepcopy(base)
    empty["experiments"]["x"] = {"pairs": []}
    with pytest.raises(ConfigError, match="experiments.x.pairs"):
        validate_config(empty)


def test_defaults_filled_for_experiments(base):
    config = validate_config(base)
    losses = config["experiments"]["tv"]["losses"]
    assert losses["reconstruction"] == {"enabled": True, "weight": 50.0}
    assert config["experiments"]["tv"]["space"] == "shared"


def test_benchmark_must_name_a_corpus(base):
    base["evaluation"]["benchmarks"]["x"] = {"task": "retrieval", "corpus": "nope"}
    with pytest.raises(ConfigError, match="evaluation.benchmarks.x.corpus.*allowed values"):
        validate_config(base)


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": {"d": 2, "c": 3}}) == canonical_json({"a": {"c": 3, "d": 2}, "b": 1})


def test_cli_validate_config_reports_error(tmp_path, repo_root, capsys):
    from mcnflow.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("download:\n  max_height: 100\n")
    assert main(["validate-config", str(repo_root / "config.yaml"), str(bad)]) == 2
    assert "download.max_height" in capsys.readouterr().err


def test_a_later_config_file_removes_an_entry_with_null(tmp_path, repo_root):
    override = tmp_path / "less.yaml"
    override.write_text("experiments: {tv_va: null}\nevaluation: {benchmarks: {youcook2_localization: null}}\n")
    config = load_config([repo_root / "config.yaml", override])
    assert "tv_va" not in config["experiments"] and "tv" in config["experiments"]
    assert "youcook2_localization" not in config["evaluation"]["benchmarks"]
