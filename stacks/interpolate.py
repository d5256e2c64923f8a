"""Variable substitution in compose values, as docker/cli does it
(cli/compose/template, cli/compose/interpolation, loader/interpolate.go).

Forms: $V ${V} ${V:-default} ${V-default} ${V:?err} ${V?err} and $$ for "$".
No ${V:+x}; a default is used literally, never re-interpolated. Keys are
never interpolated. A string whose value changed is then cast when its path
is one of docker's typed fields (replicas, ports, booleans, ...).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable, Mapping

from stacks.errors import Path, Where

# The same expression docker/cli compiles (Go RE2 and Python agree on it):
# an unbraced name may carry a :-/-/:?/? tail too, up to the next "}".
_SUBST = r"[_a-z][_a-z0-9]*(?::?[-?][^}]*)?"
_PATTERN = re.compile(
    rf"\$(?i:(?P<escaped>\$)|(?P<named>{_SUBST})|{{(?P<braced>{_SUBST})}}|(?P<invalid>))")


class InvalidTemplate(Exception):
    """docker's InvalidTemplateError: carries the text shown between quotes."""

    def __init__(self, template: str) -> None:
        super().__init__(template)
        self.template = template


Lookup = Callable[[str], "str | None"]


def substitute(template: str, lookup: Lookup) -> str:
    """One string with every variable replaced; InvalidTemplate on bad syntax or
    a missing required variable (docker reports both the same way)."""
    def replace(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        expr = match.group("named") or match.group("braced")
        if not expr:
            raise InvalidTemplate(template)
        return _expand(expr, lookup)
    return _PATTERN.sub(replace, template)


def _expand(expr: str, lookup: Lookup) -> str:
    # docker tries the forms in this order, each by "does the text contain the
    # separator": so ${V:?a-b} is read as the "-" form of a variable "V:?a".
    if ":-" in expr:
        name, default = expr.split(":-", 1)
        value = lookup(name)
        return default if not value else value
    if "-" in expr:
        name, default = expr.split("-", 1)
        value = lookup(name)
        return default if value is None else value
    for sep, empty_ok in ((":?", False), ("?", True)):
        if sep in expr:
            name, message = expr.split(sep, 1)
            value = lookup(name)
            if value is None or (value == "" and not empty_ok):
                raise InvalidTemplate(f"required variable {name} is missing a value: {message}")
            return value
    return lookup(expr) or ""


# --- typed fields (loader/interpolate.go interpolateTypeCastMapping) ---------

def _to_int(text: str) -> int:
    # strconv.Atoi: optional sign, decimal digits only
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError(f'strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _to_float(text: str) -> float:
    try:
        if text.strip() != text or "_" in text:
            raise ValueError
        return float(text)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax') from None


def _to_bool(text: str) -> bool:
    # YAML 1.1 booleans, as docker's toBoolean
    lowered = text.lower()
    if lowered in ("y", "yes", "true", "on"):
        return True
    if lowered in ("n", "no", "false", "off"):
        return False
    raise ValueError(f"invalid boolean: {text}")


def _svc(*parts: str) -> tuple:
    return ("services", "*") + parts


_CASTS: dict[tuple, Callable[[str], object]] = {
    _svc("configs", "[]", "mode"): _to_int,
    _svc("secrets", "[]", "mode"): _to_int,
    _svc("healthcheck", "retries"): _to_int,
    _svc("healthcheck", "disable"): _to_bool,
    _svc("deploy", "replicas"): _to_int,
    _svc("deploy", "update_config", "parallelism"): _to_int,
    _svc("deploy", "update_config", "max_failure_ratio"): _to_float,
    _svc("deploy", "rollback_config", "parallelism"): _to_int,
    _svc("deploy", "rollback_config", "max_failure_ratio"): _to_float,
    _svc("deploy", "restart_policy", "max_attempts"): _to_int,
    _svc("deploy", "placement", "max_replicas_per_node"): _to_int,
    _svc("ports", "[]", "target"): _to_int,
    _svc("ports", "[]", "published"): _to_int,
    _svc("ulimits", "*"): _to_int,
    _svc("ulimits", "*", "hard"): _to_int,
    _svc("ulimits", "*", "soft"): _to_int,
    _svc("privileged"): _to_bool,
    _svc("read_only"): _to_bool,
    _svc("stdin_open"): _to_bool,
    _svc("tty"): _to_bool,
    _svc("volumes", "[]", "read_only"): _to_bool,
    _svc("volumes", "[]", "volume", "nocopy"): _to_bool,
    ("networks", "*", "external"): _to_bool,
    ("networks", "*", "internal"): _to_bool,
    ("networks", "*", "attachable"): _to_bool,
    ("volumes", "*", "external"): _to_bool,
    ("secrets", "*", "external"): _to_bool,
    ("configs", "*", "external"): _to_bool,
}


_KIND = {_to_int: "an integer", _to_float: "a number", _to_bool: "a boolean"}


def _caster(pattern_path: tuple) -> Callable[[str], object] | None:
    for pattern, cast in _CASTS.items():
        if len(pattern) == len(pattern_path) and all(
                p in ("*", part) for p, part in zip(pattern, pattern_path)):
            return cast
    return None


# --- the walk ----------------------------------------------------------------

@dataclass
class _Walk:
    lookup: Lookup
    where: Where
    cast_all: bool


def interpolate(config: dict, env: Mapping[str, str], where: Where,
                cast_all: bool = False) -> dict:
    """A copy of one file's dict with every string value substituted.

    docker casts a typed field only when substitution changed it (a literal
    "3" is left for the schema to refuse). cast_all casts every string there:
    for compose-spec files, whose schema accepts strings in those fields."""
    walk = _Walk(env.get, where, cast_all)
    return {key: _walk(value, (key,), (key,), walk) for key, value in config.items()}


def _walk(value: object, path: Path, dotted: tuple, walk: _Walk) -> object:
    # `dotted` is docker's path, with "[]" for any list item: it appears in
    # docker's messages ("services.web.volumes.[]") and selects the casts.
    if isinstance(value, dict):
        return {k: _walk(v, path + (k,), dotted + (k,), walk) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, path + (i,), dotted + ("[]",), walk) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _interpolate_string(value, path, dotted, walk)
    return value


def _interpolate_string(value: str, path: Path, dotted: tuple, walk: _Walk) -> object:
    lookup, where = walk.lookup, walk.where
    name = ".".join(dotted)
    try:
        new = substitute(value, lookup)
    except InvalidTemplate as exc:
        # Go's %#v of a string: a double-quoted, escaped literal
        quoted = json.dumps(exc.template, ensure_ascii=False)
        raise where.error(path, f"invalid interpolation format for {name}: {quoted}; "
                                "you may need to escape any $ with another $",
                          with_path=False) from None
    changed = new != value
    # literal port strings in compose-spec files may be ranges ("8000-8001"):
    # normalisation reads those, so cast_all leaves them alone
    literal_ok = walk.cast_all and dotted[-1] not in ("published", "target")
    cast = _caster(dotted) if changed or literal_ok else None
    if cast is None:
        return new
    try:
        return cast(new)
    except ValueError as exc:
        if not changed:
            raise where.error(path, f"must be {_KIND[cast]} (got {json.dumps(new)})") from None
        raise where.error(path, f"error while interpolating {name}: "
                                f"failed to cast to expected type: {exc}",
                          with_path=False) from None
