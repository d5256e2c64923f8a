"""Validation of service specs that arrive as JSON: every error names the field and the fix.

The API calls `parse_service_spec` before anything touches the store, so a bad
spec is rejected whole and nothing is half-applied.
"""
from __future__ import annotations

import math
import re

from swarmpy.manager.scheduler import constraint
from swarmpy.models import Resources, RestartPolicy, ServiceSpec, from_dict

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
MODES = ("replicated", "global")
RESTART_CONDITIONS = ("none", "on-failure", "any")
PULL_POLICIES = ("always", "missing", "never")


class SpecError(ValueError):
    """A spec field is invalid; the message names the field and says what is accepted."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid service spec: {field}: {problem}")
        self.field = field


def _require_type(field: str, value, types, what: str):
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise SpecError(field, f"must be {what}, got {value!r}")
    if not isinstance(value, types):
        raise SpecError(field, f"must be {what}, got {value!r}")
    return value


def _non_negative_int(field: str, value) -> int:
    _require_type(field, value, int, "a non-negative integer")
    if value < 0:
        raise SpecError(field, f"must be a non-negative integer, got {value}")
    return value


def _string_list(field: str, value) -> list[str]:
    _require_type(field, value, list, "a list of strings")
    for i, item in enumerate(value):
        _require_type(f"{field}[{i}]", item, str, "a string")
    return value


def _string_map(field: str, value) -> dict[str, str]:
    _require_type(field, value, dict, "a map of strings to strings")
    for key, item in value.items():
        _require_type(f"{field}.{key}", item, str, "a string")
    return value


def _resources(field: str, value) -> Resources:
    _require_type(field, value, dict, "an object with nano_cpus, memory_bytes and generic")
    unknown = set(value) - {"nano_cpus", "memory_bytes", "generic"}
    if unknown:
        raise SpecError(f"{field}.{sorted(unknown)[0]}", "unknown field; use nano_cpus, memory_bytes, generic")
    generic = value.get("generic", {})
    _require_type(f"{field}.generic", generic, dict, "a map of resource kind to count")
    for kind, count in generic.items():
        _non_negative_int(f"{field}.generic.{kind}", count)
    return Resources(nano_cpus=_non_negative_int(f"{field}.nano_cpus", value.get("nano_cpus", 0)),
                     memory_bytes=_non_negative_int(f"{field}.memory_bytes", value.get("memory_bytes", 0)),
                     generic=dict(generic))


def _seconds(field: str, value) -> float:
    _require_type(field, value, (int, float), "a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise SpecError(field, f"must be a finite, non-negative number of seconds, got {value}")
    return float(value)


def _restart_policy(value) -> RestartPolicy:
    _require_type("restart_policy", value, dict, "an object")
    known = set(RestartPolicy.__dataclass_fields__)
    unknown = set(value) - known
    if unknown:
        raise SpecError(f"restart_policy.{sorted(unknown)[0]}",
                        f"unknown field; use {', '.join(sorted(known))}")
    policy = from_dict(RestartPolicy, value)
    if policy.condition not in RESTART_CONDITIONS:
        raise SpecError("restart_policy.condition",
                        f"must be one of {', '.join(RESTART_CONDITIONS)}, got {policy.condition!r}")
    for name in ("delay", "window"):
        _seconds(f"restart_policy.{name}", getattr(policy, name))
    _non_negative_int("restart_policy.max_attempts", policy.max_attempts)
    return policy


def validate_constraint(field: str, text: str) -> None:
    try:
        constraint.parse(text)
    except ValueError as exc:
        raise SpecError(field, f"{exc}, e.g. node.role==manager") from None


def parse_service_spec(data) -> ServiceSpec:
    _require_type("spec", data, dict, "a JSON object")
    known = {f for f in ServiceSpec.__dataclass_fields__}
    unknown = set(data) - known
    if unknown:
        raise SpecError(sorted(unknown)[0], f"unknown field; known fields are {', '.join(sorted(known))}")
    for required in ("name", "image"):
        if not data.get(required):
            raise SpecError(required, "is required")
    name = _require_type("name", data["name"], str, "a string")
    if not _NAME.fullmatch(name):
        raise SpecError("name", f"{name!r} is invalid; use letters, digits, '_', '.', '-' "
                                "(up to 63 characters, starting with a letter or digit)")
    spec = ServiceSpec(name=name, image=_require_type("image", data["image"], str, "an image reference"))
    spec.command = _string_list("command", data.get("command", []))
    spec.env = _string_list("env", data.get("env", []))
    for i, item in enumerate(spec.env):
        if not item or item.startswith("="):
            raise SpecError(f"env[{i}]", f"{item!r} is invalid; use KEY=VALUE")
    spec.labels = _string_map("labels", data.get("labels", {}))
    spec.container_labels = _string_map("container_labels", data.get("container_labels", {}))
    spec.mode = data.get("mode", spec.mode)
    if spec.mode not in MODES:
        raise SpecError("mode", f"must be replicated or global, got {spec.mode!r}")
    if spec.mode == "global":
        if data.get("replicas") not in (None, 1):
            raise SpecError("replicas", "replicas can only be used with replicated mode")
    else:
        spec.replicas = _non_negative_int("replicas", data.get("replicas", spec.replicas))
    spec.constraints = _string_list("constraints", data.get("constraints", []))
    for i, c in enumerate(spec.constraints):
        validate_constraint(f"constraints[{i}]", c)
    spec.preferences = _string_list("preferences", data.get("preferences", []))
    for i, p in enumerate(spec.preferences):
        if not p.startswith("spread="):
            raise SpecError(f"preferences[{i}]", f"{p!r} is invalid; use spread=node.labels.KEY")
    spec.max_replicas_per_node = _non_negative_int("max_replicas_per_node", data.get("max_replicas_per_node", 0))
    spec.reservations = _resources("reservations", data.get("reservations", {}))
    spec.limits = _resources("limits", data.get("limits", {}))
    if spec.limits.generic:
        raise SpecError("limits.generic", "generic resources can only be reserved, not limited")
    spec.restart_policy = _restart_policy(data.get("restart_policy", {}))
    spec.stop_grace_period = _seconds("stop_grace_period", data.get("stop_grace_period", spec.stop_grace_period))
    spec.update_parallelism = _non_negative_int("update_parallelism",
                                                data.get("update_parallelism", spec.update_parallelism))
    spec.pull = data.get("pull", spec.pull)
    if spec.pull not in PULL_POLICIES:
        raise SpecError("pull", f"must be one of always, missing, never, got {spec.pull!r}")
    return spec
