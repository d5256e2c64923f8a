"""JSON-schema validation of one interpolated compose file, with errors that
name the key path and what is allowed.

Files with a v3 `version` are checked against docker/cli's config_schema_v3.13
(draft-04). docker/cli picks config_schema_v3.<minor>.json per file; the older
3.x schemas are not bundled here, so a "3.2" file may use keys that only 3.13
knows. Files without `version` are checked against compose-spec.json (draft-07).
"""
from __future__ import annotations

import difflib
import functools
import json
import re
from importlib import resources

import jsonschema

from stacks.duration import HINT as DURATION_HINT, parse_duration
from stacks.errors import Where
from stacks.gofmt import go_sprint
from stacks.ports import parse_port_spec

V3_SCHEMA = "config_schema_v3.json"
SPEC_SCHEMA = "compose-spec.json"
_WEAK = ("oneOf", "anyOf")


def _checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("duration", raises=ValueError)
    def _duration(value: object) -> bool:
        return not isinstance(value, str) or parse_duration(value) is not None

    @checker.checks("ports", raises=ValueError)
    def _ports(value: object) -> bool:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = go_sprint(value)
        return not isinstance(value, str) or bool(parse_port_spec(value))

    @checker.checks("expose")
    def _expose(value: object) -> bool:
        return not isinstance(value, str) or bool(
            re.fullmatch(r"[0-9]+(-[0-9]+)?(/(tcp|udp|sctp))?", value, re.I))

    return checker


@functools.lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(resources.files("stacks").joinpath("schemas", name).read_text())
    cls = jsonschema.Draft4Validator if name == V3_SCHEMA else jsonschema.Draft7Validator
    return cls(schema, format_checker=_checker())


def validate(config: dict, schema_name: str, where: Where) -> None:
    """Raise StackFileError for the most specific schema error, if any."""
    errors = list(_validator(schema_name).iter_errors(config))
    if errors:
        raise _to_stack_error(_resolve(_best(errors)), where)


def _best(errors: list) -> jsonschema.ValidationError:
    # deepest instance path first (as docker's getMostSpecificError); a
    # oneOf/anyOf summary loses to a concrete error at the same depth
    return max(errors, key=lambda e: (len(e.absolute_path), e.validator not in _WEAK))


def _resolve(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """Inside oneOf/anyOf, the branch error that says most: one deeper than the
    alternatives, or one that is not just "wrong type"."""
    while error.validator in _WEAK and error.context:
        telling = [c for c in error.context
                   if len(c.absolute_path) > len(error.absolute_path) or c.validator != "type"]
        if not telling:
            return error
        error = _best(telling)
    return error


def _to_stack_error(error: jsonschema.ValidationError, where: Where):
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = _extra_keys(error)
        if extra:
            return where.error(path, _additional_message(error, extra[0]), at=path + (extra[0],))
    return where.error(path, _message(error))


def _message(error: jsonschema.ValidationError) -> str:
    kind, value, instance = error.validator, error.validator_value, error.instance
    if kind in _WEAK:
        return f"must be {_types(_branch_types(error))} (got {_got(instance)})"
    if kind == "type":
        return f"must be {_types(value)} (got {_got(instance)})"
    if kind == "required":
        missing = [name for name in value if name not in instance]
        return f'missing required property "{missing[0]}"' if missing else error.message
    if kind == "enum":
        return f"must be one of: {', '.join(map(go_sprint, value))} (got {_got(instance)})"
    if kind == "format":
        return _format_message(error)
    if kind == "pattern":
        return f"must match the pattern {value} (got {_got(instance)})"
    if kind in ("minimum", "maximum"):
        sign = ">=" if kind == "minimum" else "<="
        if error.schema.get("exclusive" + kind.capitalize()):
            sign = sign[0]
        return f"must be {sign} {go_sprint(value)} (got {go_sprint(instance)})"
    if kind == "uniqueItems":
        return "contains duplicate items"
    return error.message


def _format_message(error: jsonschema.ValidationError) -> str:
    got = _got(error.instance)
    if error.validator_value == "duration":
        return f"must be {DURATION_HINT} (got {got})"
    if error.validator_value == "ports":
        cause = f": {error.cause}" if error.cause else ""
        return f"invalid port {got}{cause} (expected [host_ip:][published:]target[/protocol])"
    return f"must be a port or port range with an optional /protocol (got {got})"


def _extra_keys(error: jsonschema.ValidationError) -> list[str]:
    props = error.schema.get("properties", {})
    patterns = error.schema.get("patternProperties", {})
    instance = error.instance if isinstance(error.instance, dict) else {}
    return [key for key in instance if key not in props
            and not any(re.search(p, key) for p in patterns)]


def _additional_message(error: jsonschema.ValidationError, key: str) -> str:
    props = sorted(error.schema.get("properties", {}))
    patterns = list(error.schema.get("patternProperties", {}))
    text = f'additional property "{key}" is not allowed'
    if not props:
        return f"{text} (names must match {' or '.join(patterns)})"
    allowed = props + (["x-*"] if "^x-" in patterns else [])
    text += f" (allowed: {', '.join(allowed)})"
    close = difflib.get_close_matches(key, props, n=1)
    return f'{text}; did you mean "{close[0]}"?' if close else text


def _branch_types(error: jsonschema.ValidationError) -> list[str]:
    types: list[str] = []
    for sub in error.context:
        names = sub.validator_value if sub.validator == "type" else []
        for name in [names] if isinstance(names, str) else names:
            if name not in types:
                types.append(name)
    return types


_HUMAN = {"object": "mapping", "array": "list"}


def _types(value: object) -> str:
    names = [value] if isinstance(value, str) else list(value)
    words = [_HUMAN.get(n, n) for n in names] or ["something else"]
    text = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
    return ("an " if text[0] in "aeiou" else "a ") + text


def _got(instance: object) -> str:
    if isinstance(instance, dict):
        return "a mapping"
    if isinstance(instance, list):
        return "a list"
    if instance is None:
        return "null"
    if isinstance(instance, str):
        return json.dumps(instance, ensure_ascii=False)
    return go_sprint(instance)
