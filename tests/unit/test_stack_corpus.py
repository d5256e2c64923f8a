"""The stack corpus itself (issue 4): files parse, goldens exist and are well-formed, sources are named.

The comparison of swarmpy's converter with these goldens comes with the converter; it should use
`docker_golden(name)` from tests/stacks/golden.py (see tests/stacks/README.md).  Nothing here
needs Docker: the goldens were recorded by tests/stacks/record_golden.py.
"""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

STACKS = Path(__file__).resolve().parents[1] / "stacks"


def _load_golden_module():
    # By path: tests/stacks has no __init__.py, so that `stacks` stays the project's package.
    spec = importlib.util.spec_from_file_location("stack_corpus_golden", STACKS / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _empties(value, path="") -> list[str]:
    """Paths of None / {} / [] values inside a spec."""
    if value is None or value == {} or value == []:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _empties(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _empties(v, f"{path}[{i}]")]
    return []


golden = _load_golden_module()
POSITIVE = golden.positive_names()
NEGATIVE = golden.negative_names()
SOURCES = (golden.CORPUS_DIR / "SOURCES.md").read_text()


def test_corpus_size_and_names():
    assert 12 <= len(POSITIVE) <= 20
    assert 6 <= len(NEGATIVE) <= 10
    assert not set(POSITIVE) & set(NEGATIVE), "golden files are keyed by case name"


@pytest.mark.parametrize("name", POSITIVE)
def test_positive_file_parses_and_is_a_stack(name):
    data = yaml.safe_load((golden.CORPUS_DIR / f"{name}.yml").read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict) and data["services"]
    assert str(data.get("version", "3")).startswith("3")


@pytest.mark.parametrize("name", POSITIVE)
def test_positive_file_is_named_in_sources(name):
    row = next((line for line in SOURCES.splitlines() if line.startswith(f"| `{name}.yml` |")), None)
    assert row, f"SOURCES.md has no row for {name}.yml"
    cells = [c.strip() for c in row.strip("|").split("|")]
    repo, path, commit = cells[1], cells[2], cells[3]
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", repo), row
    assert re.match(r"`[^`]+`", path), row
    assert re.search(r"`[0-9a-f]{40}`", commit), row


@pytest.mark.parametrize("name", POSITIVE)
def test_positive_golden_is_well_formed(name):
    raw = json.loads((golden.GOLDEN_DIR / f"{name}.services.json").read_text())
    assert raw["stack"] == golden.STACK and raw["case"] == name
    assert raw["docker"]["client"] and raw["docker"]["engine"]
    declared = yaml.safe_load((golden.CORPUS_DIR / f"{name}.yml").read_text())["services"]
    assert set(raw["services"]) == {f"{golden.STACK}_{svc}" for svc in declared}
    network_names = set(raw["networks"]) | set(raw["external"].get("networks", []))
    for svc_name, spec in raw["services"].items():
        assert spec["Name"] == svc_name
        assert spec["Labels"]["com.docker.stack.namespace"] == golden.STACK
        assert "com.docker.stack.image" in spec["Labels"]
        task = spec["TaskTemplate"]
        assert task["ContainerSpec"]["Image"]
        for net in task.get("Networks") or []:
            assert net["Target"] in network_names, f"{svc_name}: network target {net['Target']} is not a name"
        for ref in task["ContainerSpec"].get("Secrets") or []:
            assert ref["SecretID"] == ref["SecretName"], "secret ids are recorded as names"
        for ref in task["ContainerSpec"].get("Configs") or []:
            assert ref["ConfigID"] == ref["ConfigName"], "config ids are recorded as names"
    for net in raw["networks"].values():
        assert net["Labels"].get("com.docker.stack.namespace") == golden.STACK
    text = json.dumps(raw)
    assert str(golden.CORPUS_DIR) not in text, "absolute corpus paths must be recorded as <corpus>"
    assert not re.search(r'"(ID|Version|CreatedAt|UpdatedAt)"', text)


@pytest.mark.parametrize("name", POSITIVE)
def test_positive_config_golden_parses(name):
    config = golden.docker_config(name)
    assert isinstance(config, dict) and set(config["services"]) == set(
        yaml.safe_load((golden.CORPUS_DIR / f"{name}.yml").read_text())["services"])


@pytest.mark.parametrize("name", POSITIVE)
def test_docker_golden_helper_normalises(name):
    data = golden.docker_golden(name)
    for spec in data["services"].values():
        assert "<corpus>" not in json.dumps(spec)
        assert not _empties(spec), f"null/empty values left: {_empties(spec)}"
        task = spec["TaskTemplate"]
        assert task.get("Runtime") != "container" and task.get("ForceUpdate") is None
        targets = [n["Target"] for n in task.get("Networks", [])]
        assert targets == sorted(targets)
        assert golden.normalise_spec(spec) == spec, "normalise_spec is idempotent"


@pytest.mark.parametrize("name", NEGATIVE)
def test_negative_golden_records_both_commands(name):
    errors = golden.docker_error(name)
    assert set(errors) == {"config", "deploy"}
    assert errors["deploy"]["status"] != 0 and errors["deploy"]["message"], "docker must refuse a negative file"
    if errors["config"]["status"] == 0:
        assert golden.docker_config(name) is not None, "config accepted the file: its output is recorded"
    else:
        assert errors["config"]["message"]
        assert not (golden.GOLDEN_DIR / f"{name}.config.yml").exists()
    assert not (golden.GOLDEN_DIR / f"{name}.services.json").exists()
    assert "Since --detach" not in errors["deploy"]["message"]


@pytest.mark.parametrize("name", NEGATIVE)
def test_negative_file_is_yaml_and_named_in_sources(name):
    text = (golden.NEGATIVE_DIR / f"{name}.yml").read_text()
    assert isinstance(yaml.safe_load(text), dict)
    assert text.startswith("# Negative"), "each negative file says what is wrong with it"
    assert f"`{name}`" in SOURCES


def test_no_stray_goldens():
    expected = {f"{n}.services.json" for n in POSITIVE} | {f"{n}.config.yml" for n in POSITIVE}
    expected |= {f"{n}.error.txt" for n in NEGATIVE}
    expected |= {f"{n}.config.yml" for n in NEGATIVE if golden.docker_error(n)["config"]["status"] == 0}
    present = {p.name for p in golden.GOLDEN_DIR.iterdir()}
    assert present == expected


def test_files_beside_the_stacks_exist():
    """configs/secrets `file:` and env_file paths must exist, or docker refuses to deploy."""
    for name in POSITIVE:
        data = yaml.safe_load((golden.CORPUS_DIR / f"{name}.yml").read_text())
        paths = [obj["file"] for key in ("configs", "secrets") for obj in (data.get(key) or {}).values()
                 if isinstance(obj, dict) and "file" in obj]
        for svc in data["services"].values():
            env_file = svc.get("env_file") or []
            paths += [env_file] if isinstance(env_file, str) else env_file
        for p in paths:
            assert (golden.CORPUS_DIR / p).is_file(), f"{name}: {p} is missing"
