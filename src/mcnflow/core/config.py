"""Load, merge and validate the workflow configuration.

One schema (``config.schema.yaml`` in this package; ``workflow/schemas/`` links to it) is the single
source of truth. It loads as package data, so an installed (non-editable) mcnflow finds it too. Snakemake's
Snakefile and every CLI subcommand validate through :func:`validate_config`, so a bad key gives
the same message whether the user runs ``snakemake`` or ``mcnflow <stage>`` by hand.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema
import yaml

SCHEMA_RESOURCE = "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value is missing or not allowed; the message names the key."""


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` updated recursively by ``override`` (override wins; neither is modified)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_yaml(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


@functools.lru_cache(maxsize=1)
def _packaged_schema() -> str:
    return resources.files("mcnflow.core").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")


def load_schema(path: str | Path | None = None) -> dict:
    """The config schema: the package's own unless ``path`` names another file."""
    if path is not None:
        return load_yaml(path)
    return yaml.safe_load(_packaged_schema())


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def describe_error(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return f"config key '{key}': {error.instance!r} is not allowed; allowed values: {allowed}"
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        return (f"config key '{key}': unknown key(s) {', '.join(map(repr, extra))}; "
                f"allowed keys: {', '.join(allowed)}")
    if error.validator == "required":
        return f"config key '{key}': {error.message}"
    if error.validator == "type":
        return f"config key '{key}': {error.instance!r} must be of type {error.validator_value}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"config key '{key}': {error.instance!r} violates {error.validator} {error.validator_value}"
    if error.validator == "pattern":
        return f"config key '{key}': {error.instance!r} does not match pattern {error.validator_value!r}"
    description = schema.get("description")
    suffix = f" ({description})" if description else ""
    return f"config key '{key}': {error.message}{suffix}"


def deref(node: Any, root: Mapping) -> Any:
    """``node`` with its local ``$ref`` s ("#/a/b") followed, each referring node's own keys kept over its
    target's (so a mark such as ``x-operational`` beside a ``$ref`` survives the whole chain)."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def fill_defaults(instance: Any, schema: dict, root: dict | None = None) -> None:
    """Insert schema ``default`` values for absent keys, recursively (as Snakemake's validate does),
    following ``$ref`` s, so a stage schema made of references fills the same defaults as the config's."""
    root = schema if root is None else root
    schema = deref(schema, root)
    if not isinstance(instance, dict) or not isinstance(schema, dict):
        return
    for key, subschema in schema.get("properties", {}).items():
        subschema = deref(subschema, root)
        if key not in instance and "default" in subschema:
            instance[key] = copy.deepcopy(subschema["default"])
        if key in instance:
            fill_defaults(instance[key], subschema, root)
    extra = deref(schema.get("additionalProperties"), root)
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                fill_defaults(value, extra, root)


# Tables whose entries a later config file may remove by setting them to null (e.g. the demo drops
# an experiment of config.yaml with `experiments: {tv_va: null}`).
REMOVABLE_TABLES = (("corpora",), ("experiments",), ("evaluation", "benchmarks"))


def drop_removed_entries(config: dict) -> None:
    """Remove the entries of REMOVABLE_TABLES that a config file set to null."""
    for path in REMOVABLE_TABLES:
        node: Any = config
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            for name in [name for name, value in node.items() if value is None]:
                del node[name]


def validate_config(config: dict, schema: dict | None = None) -> dict:
    """Validate ``config`` in place (filling defaults) and return it; raise ConfigError naming the key."""
    schema = schema or load_schema()
    drop_removed_entries(config)
    fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), _key_path(e)))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(describe_error(e) for e in errors[:10]))
    _check_cross_references(config)
    return config


def _check_cross_references(config: dict) -> None:
    """Checks JSON Schema cannot express: names that must refer to other config entries."""
    corpora = config.get("corpora", {})
    for role_key in ("train_corpus",):
        name = config.get(role_key)
        if name is not None and name not in corpora:
            raise ConfigError(f"config key '{role_key}': {name!r} is not a corpus; allowed values: "
                              + ", ".join(map(repr, sorted(corpora))))
    reference = (config.get("statistics") or {}).get("reference")
    experiments = config.get("experiments") or {}
    if reference is not None and experiments and reference not in experiments:
        raise ConfigError(f"config key 'statistics.reference': {reference!r} is not an experiment; allowed values: "
                          + ", ".join(map(repr, sorted(experiments))))
    for bench, spec in (config.get("evaluation", {}).get("benchmarks") or {}).items():
        corpus = spec.get("corpus")
        if corpus not in corpora:
            raise ConfigError(f"config key 'evaluation.benchmarks.{bench}.corpus': {corpus!r} is not a corpus; "
                              "allowed values: " + ", ".join(map(repr, sorted(corpora))))


def load_config(paths: Iterable[str | Path], overrides: dict | None = None) -> dict:
    """Merge the YAML files in order (later ones override), apply ``overrides``, validate."""
    merged: dict = {}
    for path in paths:
        merged = deep_merge(merged, load_yaml(path))
    if overrides:
        merged = deep_merge(merged, overrides)
    return validate_config(merged)


def canonical_json(value: Any) -> str:
    """Sorted-key compact JSON: the form in which settings reach rules, so YAML key order never matters."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """Every stage reads its settings from a settings file or JSON (what the workflow passes, made by
    mcnflow.core.plan) or from config files (then the same plan computes them)."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--settings-file", metavar="JSON_FILE",
                       help="the stage's settings as a JSON file (what the workflow passes)")
    group.add_argument("--settings", metavar="JSON", help="the stage's settings as inline JSON")
    group.add_argument("--config", action="extend", nargs="+", metavar="YAML",
                       help="config file(s), later ones override earlier ones (e.g. config.yaml demo/config.yaml)")


def settings_from_args(args: argparse.Namespace, stage: str, **names: str):
    """The stage's frozen settings: ``--settings-file`` / ``--settings`` JSON validated against the
    stage's part of the schema, or computed from the ``--config`` files by :class:`mcnflow.core.plan.Plan`
    (``names``: the corpus / experiment / benchmark the stage runs for)."""
    from mcnflow.core.plan import Plan, validate_stage_settings

    if getattr(args, "settings_file", None):
        try:
            settings = json.loads(Path(args.settings_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"--settings-file {args.settings_file}: cannot be read ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings-file {args.settings_file} is not valid JSON: {exc}") from exc
        return validate_stage_settings(stage, settings, f"--settings-file {args.settings_file}")
    if getattr(args, "settings", None):
        try:
            settings = json.loads(args.settings)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--settings is not valid JSON: {exc}") from exc
        return validate_stage_settings(stage, settings)
    return Plan(load_config(args.config)).settings(stage, **names)
