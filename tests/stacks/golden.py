"""Load Docker's recorded outputs for the stack corpus (tests/stacks/golden/), normalised for comparison.

The golden files are made by tests/stacks/record_golden.py from the real Docker CLI and engine;
tests/stacks/README.md says what they hold and why each normalisation step below is needed.

    docker_golden(name)   -> what `docker stack deploy` made of corpus/<name>.yml   (the helper
                             for the comparison with swarmpy's converter; see its docstring)
    docker_config(name)   -> `docker stack config` of the case, parsed (None if docker refused it)
    docker_error(name)    -> a negative case's exit statuses and messages, per command
    normalise_spec(spec)  -> apply to both sides of a service-spec comparison

Import it by path, not as `stacks.golden`: tests/stacks has no __init__.py on purpose (the
project's own `stacks` package must stay the only `stacks`).  From a test:

    import importlib.util, pathlib
    _p = pathlib.Path(__file__).resolve().parents[1] / "stacks" / "golden.py"
    _spec = importlib.util.spec_from_file_location("stack_corpus_golden", _p)
    golden = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(golden)

(or `from tests.stacks import golden` when the repository root is on sys.path).
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
CORPUS_DIR = HERE / "corpus"
NEGATIVE_DIR = HERE / "negative"
GOLDEN_DIR = HERE / "golden"
STACK = "corpus"                          # the stack name every golden was deployed as
CORPUS_TOKEN, NEGATIVE_TOKEN = "<corpus>", "<negative>"

# Fields the engine fills in when it returns a spec, with the value it fills: not something the
# stack file or the CLI's conversion said.  normalise_spec() drops them when they hold exactly this.
ENGINE_FILLED = {
    ("TaskTemplate", "ForceUpdate"): 0,
    ("TaskTemplate", "Runtime"): "container",
    ("TaskTemplate", "ContainerSpec", "Isolation"): "default",
}


def positive_names() -> list[str]:
    return sorted(p.stem for p in CORPUS_DIR.glob("*.yml"))


def negative_names() -> list[str]:
    return sorted(p.stem for p in NEGATIVE_DIR.glob("*.yml") if not p.name.endswith(".override.yml"))


# -- normalisation ----------------------------------------------------------------------------------
def _substitute(value: Any, corpus_dir: str, negative_dir: str) -> Any:
    if isinstance(value, str):
        return value.replace(CORPUS_TOKEN, corpus_dir).replace(NEGATIVE_TOKEN, negative_dir)
    if isinstance(value, list):
        return [_substitute(v, corpus_dir, negative_dir) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, corpus_dir, negative_dir) for k, v in value.items()}
    return value


def _prune(value: Any) -> Any:
    """Drop None, {} and [] (docker's JSON mixes omitted fields with explicit nulls and empties)."""
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _sort(items: list | None, key) -> list | None:
    return sorted(items, key=key) if items else items


def normalise_spec(spec: dict) -> dict:
    """A service Spec in the comparable form; apply it to docker's and to swarmpy's side alike.

    - engine-filled defaults (ENGINE_FILLED) removed when they hold the filled value;
    - lists whose order carries no meaning sorted: TaskTemplate.Networks (by Target),
      ContainerSpec.Env, .Secrets, .Configs, EndpointSpec.Ports, Placement.Constraints;
      Mounts, Args, Command, Aliases keep their order;
    - None / {} / [] dropped everywhere.
    Units stay docker's: durations in integer nanoseconds, memory in bytes, CPUs in NanoCPUs.
    """
    spec = copy.deepcopy(spec)
    for path, default in ENGINE_FILLED.items():
        node = spec
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(path[-1]) == default:
            del node[path[-1]]
    task = spec.get("TaskTemplate") or {}
    task["Networks"] = _sort(task.get("Networks"), lambda n: n.get("Target", ""))
    placement = task.get("Placement") or {}
    placement["Constraints"] = _sort(placement.get("Constraints"), str)
    cspec = task.get("ContainerSpec") or {}
    cspec["Env"] = _sort(cspec.get("Env"), str)
    cspec["Secrets"] = _sort(cspec.get("Secrets"), lambda r: (r.get("SecretName", ""), (r.get("File") or {}).get("Name", "")))
    cspec["Configs"] = _sort(cspec.get("Configs"), lambda r: (r.get("ConfigName", ""), (r.get("File") or {}).get("Name", "")))
    endpoint = spec.get("EndpointSpec") or {}
    endpoint["Ports"] = _sort(endpoint.get("Ports"), lambda p: (p.get("TargetPort", 0), p.get("PublishedPort", 0),
                                                                p.get("Protocol", ""), p.get("PublishMode", "")))
    return _prune(spec)


# -- the goldens ----------------------------------------------------------------------------------------
def _dirs(corpus_dir, negative_dir) -> tuple[str, str]:
    return str(corpus_dir or CORPUS_DIR), str(negative_dir or NEGATIVE_DIR)


def docker_golden(name: str, corpus_dir: str | Path | None = None, raw: bool = False) -> dict:
    """>>> THE HELPER FOR THE CONVERTER COMPARISON <<<

    What `docker stack deploy --resolve-image never -c corpus/<name>.yml corpus` made, as recorded
    in golden/<name>.services.json:

        {"stack": "corpus",
         "services": {"corpus_web": <Spec>, ...},          # keyed by service name
         "networks": {"corpus_default": {"Driver", "Labels", "Options", "Attachable", ...}},
         "secrets":  {"corpus_x": {"Labels", ...}},
         "configs":  {"corpus_y": {"Labels", "Data": <text>}},
         "env": {...},                                       # the interpolation variables it ran with
         "docker": {"client", "engine", ...}, "deploy_warnings": [...]}

    Every service Spec goes through normalise_spec() (unless raw=True); ids were already replaced
    by names when recorded (network Target, SecretID, ConfigID hold names); `<corpus>` in paths
    (bind mount sources) becomes `corpus_dir` (default: this checkout's tests/stacks/corpus), so
    it matches a conversion of the file in place.  To compare, convert the same file with the
    same stack name ("corpus") and the same environment (golden["env"], nothing else set),
    bring swarmpy's spec into docker's shape (CamelCase keys, nanoseconds, bytes), run it through
    normalise_spec() and compare service by service.
    """
    path = GOLDEN_DIR / f"{name}.services.json"
    data = json.loads(path.read_text())
    data = _substitute(data, *_dirs(corpus_dir, None))
    if not raw:
        data["services"] = {svc: normalise_spec(spec) for svc, spec in data["services"].items()}
    return data


def docker_config(name: str, corpus_dir: str | Path | None = None,
                  negative_dir: str | Path | None = None) -> dict | None:
    """golden/<name>.config.yml parsed (what `docker stack config` printed), or None if docker refused the file."""
    path = GOLDEN_DIR / f"{name}.config.yml"
    if not path.exists():
        return None
    return _substitute(yaml.safe_load(path.read_text()), *_dirs(corpus_dir, negative_dir))


_SECTION = re.compile(r"^# docker stack (config|deploy) .*\n# exit status (\d+)\n", re.MULTILINE)


def docker_error(name: str) -> dict:
    """golden/<name>.error.txt as {"config": {"status": int, "message": str}, "deploy": {...}}.

    A status of 0 means that command accepted the file (e.g. `docker stack config` does not look
    for undefined secrets or networks; the deploy does)."""
    text = (GOLDEN_DIR / f"{name}.error.txt").read_text()
    marks = list(_SECTION.finditer(text))
    out = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[m.group(1)] = {"status": int(m.group(2)), "message": text[m.end():end].strip()}
    return out
