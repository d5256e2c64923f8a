"""Several normalised compose files into one, as docker/cli's merge.go
(mergo with override and appended slices, plus its special cases).

Services merge by name, key by key:
- ports by published port, secrets and configs by source, volumes by target
  (an override entry replaces the base entry with the same key; the result is
  sorted by that key);
- command and entrypoint are replaced by a non-empty override;
- environment, labels, sysctls and other mappings merge by key; an empty or
  null environment value does not replace a set one (docker's pointers);
- logging merges options when the drivers agree (or one is unset), else the
  override's logging replaces it;
- ulimits by name, each replaced whole; networks by name (aliases replaced,
  ipv4/ipv6 addresses when set);
- every other list (cap_add, extra_hosts, dns, placement constraints,
  healthcheck.test, ...) is appended to, as docker does;
- scalars: the override wins unless it is empty (0, "", false, a zero
  duration), except replicas, parallelism, max_attempts and retries, where 0
  wins too (they are pointers in docker).
Top-level networks, volumes, secrets and configs: an override entry replaces
the base entry of that name whole. Other top-level keys come from the first file.
"""
from __future__ import annotations

from stacks.duration import parse_duration

_MAPS = {"environment", "labels", "sysctls", "options", "args", "driver_opts", "ulimits"}
_ZERO_WINS = {"replicas", "parallelism", "max_attempts", "retries"}
_DURATIONS = {"stop_grace_period", "interval", "timeout", "start_period", "start_interval",
              "delay", "window", "monitor"}


def merge_configs(base: dict, override: dict) -> dict:
    out = dict(base)
    services = dict(base.get("services") or {})
    for name, service in (override.get("services") or {}).items():
        services[name] = merge_service(services[name], service) if name in services else service
    out["services"] = services
    for section in ("networks", "volumes", "secrets", "configs"):
        out[section] = {**(base.get(section) or {}), **(override.get(section) or {})}
    return out


def merge_service(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge_field(key, out[key], value) if key in out else value
    return out


def _merge_field(key: str, base: object, over: object) -> object:
    special = _SPECIAL.get(key)
    if special is not None and base is not None and over is not None:
        return special(base, over)
    return _merge_value(key, base, over)


def _merge_value(key: str, base: object, over: object) -> object:
    if isinstance(base, dict) and isinstance(over, dict):
        if key in _MAPS:
            return {**base, **over}
        return _merge_struct(base, over)
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return base if _is_empty(key, over) else over


def _merge_struct(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge_value(key, out[key], value) if key in out else value
    return out


def _is_empty(key: str, value: object) -> bool:
    if key in _ZERO_WINS:
        return value is None
    if key in _DURATIONS and isinstance(value, str):
        try:
            return parse_duration(value) == 0
        except ValueError:
            return False
    return value is None or value == "" or value is False or (
        isinstance(value, (int, float)) and value == 0)


def _keyed(key_of):
    def merge(base: list, over: list) -> list:
        entries = {key_of(item): item for item in base}
        entries.update({key_of(item): item for item in over})
        return sorted(entries.values(), key=key_of)
    return merge


def _merge_environment(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if out.get(key) in (None, "") or value not in (None, ""):
            out[key] = value
    return out


def _merge_logging(base: dict, over: dict) -> dict:
    base_driver, over_driver = base.get("driver") or "", over.get("driver") or ""
    if base_driver and over_driver and base_driver != over_driver:
        return over
    out = dict(base)
    if not base_driver and over_driver:
        out["driver"] = over_driver
    # docker merges into the base's options map; when the base has none the
    # override's options are lost (merge.go mergeLoggingConfig), kept as is.
    if isinstance(base.get("options"), dict):
        out["options"] = {**base["options"], **(over.get("options") or {})}
    return out


def _merge_networks(base: dict, over: dict) -> dict:
    out = dict(base)
    for name, value in over.items():
        current = out.get(name)
        if current is None:
            out[name] = value
        elif value is not None:
            merged = {k: v for k, v in current.items() if k != "aliases"}
            if value.get("aliases") is not None:
                merged["aliases"] = value["aliases"]
            for key in ("ipv4_address", "ipv6_address"):
                if value.get(key):
                    merged[key] = value[key]
            out[name] = merged
    return out


def _replace_if_set(base: list, over: list) -> list:
    return over if over else base


_SPECIAL = {
    "ports": _keyed(lambda port: port.get("published") or 0),
    "secrets": _keyed(lambda ref: ref.get("source") or ""),
    "configs": _keyed(lambda ref: ref.get("source") or ""),
    "volumes": _keyed(lambda volume: volume.get("target") or ""),
    "command": _replace_if_set,
    "entrypoint": _replace_if_set,
    "environment": _merge_environment,
    "logging": _merge_logging,
    "networks": _merge_networks,
}
