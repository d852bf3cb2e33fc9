"""Conda envs (envs/*.yaml) parse and pin exactly what pyproject.toml pins (conda channels are not
reachable here, so the envs themselves are not solved in CI)."""

import re
import tomllib

import pytest
import yaml

from workflow_utils import REPO

ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def _requirement_map(lines):
    pins = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", line.strip())
        pins[match.group(1).lower()] = match.group(2).replace(" ", "")
    return pins


PYPROJECT = _requirement_map(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def test_every_rule_env_exists():
    referenced = set()
    for rule_file in (REPO / "workflow/rules").glob("*.smk"):
        referenced |= set(re.findall(r'"\.\./\.\./envs/([\w-]+\.yaml)"', rule_file.read_text()))
    assert referenced and referenced == {p.name for p in ENV_FILES}


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_match_pyproject(env_file):
    env = yaml.safe_load(env_file.read_text())
    assert env["channels"] == ["conda-forge"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    for name, spec in _requirement_map(pip).items():
        assert name in PYPROJECT, f"{env_file.name}: {name} is not a dependency in pyproject.toml"
        assert spec == PYPROJECT[name], f"{env_file.name}: {name}{spec} != pyproject {name}{PYPROJECT[name]}"
