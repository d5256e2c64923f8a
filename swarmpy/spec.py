"""Validation of service specs that arrive as JSON: every error names the field and the fix.

The API calls `parse_service_spec` before anything touches the store, so a bad
spec is rejected whole and nothing is half-applied.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import re

from swarmpy.manager.scheduler import constraint
from swarmpy.models import (FileRef, Healthcheck, LogDriver, Mount, NetworkAttachment, PortConfig, Resources,
                            RestartPolicy, ServiceSpec, Ulimit, UpdateConfig, from_dict, plain, to_dict)

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")     # the engine's rule
MODES = ("replicated", "global", "replicated-job", "global-job")
RESTART_CONDITIONS = ("none", "on-failure", "any")
PULL_POLICIES = ("always", "missing", "never")
FAILURE_ACTIONS = ("pause", "continue", "rollback")
ROLLBACK_FAILURE_ACTIONS = ("pause", "continue")
UPDATE_ORDERS = ("stop-first", "start-first")
MOUNT_TYPES = ("volume", "bind", "tmpfs")
CONSISTENCIES = ("default", "consistent", "cached", "delegated")
PROPAGATIONS = ("rprivate", "private", "rshared", "shared", "rslave", "slave")
PROTOCOLS = ("tcp", "udp", "sctp")
PUBLISH_MODES = ("ingress", "host")
ENDPOINT_MODES = ("vip", "dnsrr")
_ALIAS = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,62})$")
ULIMIT_NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
                "rss", "rtprio", "rttime", "sigpending", "stack")
_SIGNAL = re.compile(r"^(SIG)?[A-Z][A-Z0-9]*([+-][0-9]+)?$|^[0-9]+$", re.IGNORECASE)
_CAPABILITY = re.compile(r"^(CAP_)?[A-Z_]+$", re.IGNORECASE)
MIN_HEALTH_DURATION_S = 0.001      # the engine refuses non-zero health durations below 1 ms


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
    if all(type(item) is str for item in value):     # the usual case, without a field name per item
        return value
    for i, item in enumerate(value):
        _require_type(f"{field}[{i}]", item, str, "a string")
    return value


def _string_map(field: str, value) -> dict[str, str]:
    _require_type(field, value, dict, "a map of strings to strings")
    if all(type(item) is str for item in value.values()):
        return value
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


def _object(field: str, value, cls) -> dict:
    """A JSON object whose keys are fields of the dataclass `cls`."""
    known = list(cls.__dataclass_fields__)
    _require_type(field, value, dict, f"an object with {', '.join(known)}")
    unknown = set(value) - set(known)
    if unknown:
        raise SpecError(f"{field}.{sorted(unknown)[0]}", f"unknown field; use {', '.join(known)}")
    return value


def _one_of(field: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SpecError(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _bool(field: str, value) -> bool:
    return _require_type(field, value, bool, "true or false")


def _string(field: str, value) -> str:
    return _require_type(field, value, str, "a string")


def _update_config(field: str, value, actions: tuple[str, ...]) -> UpdateConfig:
    config = from_dict(UpdateConfig, _object(field, value, UpdateConfig))
    _non_negative_int(f"{field}.parallelism", config.parallelism)
    config.delay = _seconds(f"{field}.delay", config.delay)
    config.monitor = _seconds(f"{field}.monitor", config.monitor)
    _one_of(f"{field}.failure_action", config.failure_action, actions)
    _one_of(f"{field}.order", config.order, UPDATE_ORDERS)
    ratio = _require_type(f"{field}.max_failure_ratio", config.max_failure_ratio, (int, float), "a number")
    if not 0 <= ratio <= 1:
        raise SpecError(f"{field}.max_failure_ratio", f"must be between 0 and 1, got {ratio}")
    config.max_failure_ratio = float(ratio)
    return config


def _healthcheck(value) -> Healthcheck | None:
    if value is None:
        return None
    check = from_dict(Healthcheck, _object("healthcheck", value, Healthcheck))
    test = _string_list("healthcheck.test", check.test)
    forms = 'use [] (the image\'s), ["NONE"], ["CMD", "ARG", ...] or ["CMD-SHELL", "COMMAND"]'
    if test and (test[0] not in ("NONE", "CMD", "CMD-SHELL") or (test[0] == "NONE" and len(test) > 1)
                 or (test[0] == "CMD" and len(test) < 2) or (test[0] == "CMD-SHELL" and len(test) != 2)):
        raise SpecError("healthcheck.test", f"{test!r} is invalid; {forms}")
    for name in ("interval", "timeout", "start_period", "start_interval"):
        seconds = _seconds(f"healthcheck.{name}", getattr(check, name))
        if 0 < seconds < MIN_HEALTH_DURATION_S:
            raise SpecError(f"healthcheck.{name}", f"must be 0 (the engine's default) or at least 1ms, "
                                                   f"got {seconds}")
        setattr(check, name, seconds)
    _non_negative_int("healthcheck.retries", check.retries)
    return check


def _log_driver(value) -> LogDriver | None:
    if value is None:
        return None
    _object("log_driver", value, LogDriver)
    # An empty name is the engine's default driver with these options (a compose file's
    # logging: with options and no driver gives that, in docker too).
    return LogDriver(name=_string("log_driver.name", value.get("name", "")),
                     options=dict(_string_map("log_driver.options", value.get("options", {}))))


def _ulimits(value) -> list[Ulimit]:
    _require_type("ulimits", value, list, "a list of objects with name, soft and hard")
    out, seen = [], set()
    for i, item in enumerate(value):
        field = f"ulimits[{i}]"
        _object(field, item, Ulimit)
        name = _one_of(f"{field}.name", item.get("name"), ULIMIT_NAMES)
        if name in seen:
            raise SpecError(f"{field}.name", f"ulimit {name!r} is given twice; give each limit once")
        seen.add(name)
        soft, hard = (_require_type(f"{field}.{k}", item.get(k), int, "an integer (-1: unlimited)")
                      for k in ("soft", "hard"))
        for k, v in (("soft", soft), ("hard", hard)):
            if v < -1:
                raise SpecError(f"{field}.{k}", f"must be -1 (unlimited) or more, got {v}")
        if hard != -1 and (soft == -1 or soft > hard):
            raise SpecError(f"{field}.soft", f"soft limit {soft} is above the hard limit {hard}; "
                                             "the soft limit must not exceed the hard one")
        out.append(Ulimit(name=name, soft=soft, hard=hard))
    return out


def _mounts(value) -> list[Mount]:
    _require_type("mounts", value, list, "a list of mount objects")
    mounts = [_mount(f"mounts[{i}]", item) for i, item in enumerate(value)]
    targets = [m.target for m in mounts]
    for i, target in enumerate(targets):
        if target in targets[:i]:
            raise SpecError(f"mounts[{i}].target", f"duplicate mount point: {target}; mount each path once")
    return mounts


_MOUNT_OPTIONS = {"bind": ("bind_propagation",),
                  "volume": ("volume_nocopy", "volume_labels", "volume_driver", "volume_driver_options"),
                  "tmpfs": ("tmpfs_size_bytes", "tmpfs_mode")}


def _mount(field: str, value) -> Mount:
    _object(field, value, Mount)
    if not value.get("target"):
        raise SpecError(f"{field}.target", "is required: the path in the container")
    mount = from_dict(Mount, value)
    for name in ("target", "source", "consistency", "bind_propagation", "volume_driver"):
        _string(f"{field}.{name}", getattr(mount, name))
    if not mount.target.startswith("/"):
        raise SpecError(f"{field}.target", f"{mount.target!r} is not an absolute path")
    _one_of(f"{field}.type", mount.type, MOUNT_TYPES)
    for name in ("read_only", "volume_nocopy"):
        _bool(f"{field}.{name}", getattr(mount, name))
    if mount.consistency:
        _one_of(f"{field}.consistency", mount.consistency, CONSISTENCIES)
    if mount.bind_propagation:
        _one_of(f"{field}.bind_propagation", mount.bind_propagation, PROPAGATIONS)
    _string_map(f"{field}.volume_labels", mount.volume_labels)
    _string_map(f"{field}.volume_driver_options", mount.volume_driver_options)
    _non_negative_int(f"{field}.tmpfs_size_bytes", mount.tmpfs_size_bytes)
    if not 0 <= _non_negative_int(f"{field}.tmpfs_mode", mount.tmpfs_mode) <= 0o7777:
        raise SpecError(f"{field}.tmpfs_mode", f"must be a file mode up to 0o7777, got {mount.tmpfs_mode}")
    defaults = Mount(target=mount.target)
    for kind, options in _MOUNT_OPTIONS.items():
        for name in options:
            if kind != mount.type and getattr(mount, name) != getattr(defaults, name):
                raise SpecError(f"{field}.{name}", f"cannot be used with mount type {mount.type!r}, "
                                                   f"only with {kind!r}")
    _mount_source(field, mount)
    return mount


def _mount_source(field: str, mount: Mount) -> None:
    if mount.type == "bind" and not mount.source.startswith("/"):
        raise SpecError(f"{field}.source", f"a bind mount needs an absolute host path, got {mount.source!r}")
    if mount.type == "tmpfs" and mount.source:
        raise SpecError(f"{field}.source", "must be empty for a tmpfs mount")
    if mount.type == "volume" and mount.source and not _VOLUME_NAME.fullmatch(mount.source):
        raise SpecError(f"{field}.source", f"{mount.source!r} is not a valid volume name; use two or more "
                                           "letters, digits, '_', '.', '-' (empty: an anonymous volume)")


def _ports(value) -> list[PortConfig]:
    _require_type("ports", value, list, "a list of port objects")
    ports, seen = [], set()
    for i, item in enumerate(value):
        field = f"ports[{i}]"
        _object(field, item, PortConfig)
        port = from_dict(PortConfig, {"target": None, **item})
        for name, low in (("target", 1), ("published", 0)):
            number = getattr(port, name)
            if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= 65535:
                raise SpecError(f"{field}.{name}", f"must be a port number from {low} to 65535, got {number!r}")
        _one_of(f"{field}.protocol", port.protocol, PROTOCOLS)
        _one_of(f"{field}.mode", port.mode, PUBLISH_MODES)
        key = (port.published, port.protocol)
        if port.published and key in seen:
            raise SpecError(f"{field}.published", f"port {port.published}/{port.protocol} is published "
                                                  "twice; publish each port once")
        seen.add(key)
        ports.append(port)
    return ports


def _hosts(value) -> list[str]:
    for i, entry in enumerate(_string_list("hosts", value)):
        parts = entry.split()
        if len(parts) < 2 or not _is_ip(parts[0]):
            raise SpecError(f"hosts[{i}]", f"{entry!r} is invalid; use \"IP HOSTNAME [ALIAS...]\", "
                                           "e.g. \"10.0.0.2 db\"")
    return value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


class _SpecDraft:
    """What a service spec is validated into: the fields parsing set, as attributes; a field
    it did not set reads ServiceSpec's default (one shared instance: read, never changed).
    Building a whole ServiceSpec and then its dict form took a tenth of a busy leader's time
    per update; the update path needs only the dict form (`parse_service_spec_dict`)."""

    def __init__(self, name: str, image: str) -> None:
        self.name = name
        self.image = image


for _field in dataclasses.fields(ServiceSpec):
    if _field.default is not dataclasses.MISSING:
        setattr(_SpecDraft, _field.name, _field.default)
    elif _field.default_factory is not dataclasses.MISSING:
        setattr(_SpecDraft, _field.name, _field.default_factory())


def _default_spec_maker():
    """A function that returns ServiceSpec's dict form with its defaults, new containers
    each call: written out as one literal, which Python builds faster than any copy."""
    stored = to_dict(ServiceSpec(name="", image=""))
    namespace: dict = {}
    exec(f"def default_spec():\n    return {stored!r}\n", namespace)
    assert namespace["default_spec"]() == stored, "a ServiceSpec default has no literal form"
    return namespace["default_spec"]


_default_spec = _default_spec_maker()


_SERVICE_FIELDS = frozenset(ServiceSpec.__dataclass_fields__)
# ServiceSpec's fields from `entrypoint` on: docker's ContainerSpec beyond image, command,
# env and labels (models.py keeps them last).
_CONTAINER_FIELDS = frozenset(list(ServiceSpec.__dataclass_fields__)[
    list(ServiceSpec.__dataclass_fields__).index("entrypoint"):])


def _container_fields(spec: _SpecDraft, data: dict) -> None:
    """Docker's ContainerSpec fields beyond image, command, env and labels."""
    if _CONTAINER_FIELDS.isdisjoint(data):
        return      # none given: ServiceSpec's defaults, which is what validating them gives
    spec.entrypoint = _string_list("entrypoint", data.get("entrypoint", []))
    for name in ("hostname", "user", "working_dir", "stop_signal"):
        setattr(spec, name, _string(name, data.get(name, "")))
    if spec.working_dir and not spec.working_dir.startswith("/"):
        raise SpecError("working_dir", f"{spec.working_dir!r} is not an absolute path")
    if spec.stop_signal and not _SIGNAL.fullmatch(spec.stop_signal):
        raise SpecError("stop_signal", f"{spec.stop_signal!r} is invalid; use a signal name or number, "
                                       "e.g. SIGINT or 2")
    for name in ("tty", "open_stdin", "read_only"):
        setattr(spec, name, _bool(name, data.get(name, False)))
    init = data.get("init")
    spec.init = None if init is None else _bool("init", init)
    spec.hosts = _hosts(data.get("hosts", []))
    spec.dns_nameservers = _string_list("dns_nameservers", data.get("dns_nameservers", []))
    for i, server in enumerate(spec.dns_nameservers):
        if not _is_ip(server):
            raise SpecError(f"dns_nameservers[{i}]", f"{server!r} is not an IP address")
    spec.dns_search = _string_list("dns_search", data.get("dns_search", []))
    spec.dns_options = _string_list("dns_options", data.get("dns_options", []))
    spec.sysctls = dict(_string_map("sysctls", data.get("sysctls", {})))
    spec.ulimits = _ulimits(data.get("ulimits", []))
    for name in ("cap_add", "cap_drop"):
        caps = _string_list(name, data.get(name, []))
        for i, cap in enumerate(caps):
            if not _CAPABILITY.fullmatch(cap):
                raise SpecError(f"{name}[{i}]", f"{cap!r} is not a capability; use e.g. NET_ADMIN or ALL")
        setattr(spec, name, caps)
    spec.healthcheck = _healthcheck(data.get("healthcheck"))
    spec.log_driver = _log_driver(data.get("log_driver"))
    spec.mounts = _mounts(data.get("mounts", []))
    spec.ports = _ports(data.get("ports", []))
    spec.secrets = _file_refs("secrets", data.get("secrets", []))
    spec.configs = _file_refs("configs", data.get("configs", []))
    spec.networks = _networks(data.get("networks", []))
    spec.endpoint_mode = _one_of("endpoint_mode", data.get("endpoint_mode", "vip"), ENDPOINT_MODES)


def _networks(value) -> list[NetworkAttachment]:
    """Which networks the service's tasks join; the control API resolves names to ids."""
    _require_type("networks", value, list, "a list of objects with target and aliases")
    attachments = []
    for i, item in enumerate(value):
        field = f"networks[{i}]"
        _object(field, item, NetworkAttachment)
        attachment = from_dict(NetworkAttachment, {"target": None, **item})
        _require_type(f"{field}.target", attachment.target, str, "a network's name or id")
        if not attachment.target:
            raise SpecError(f"{field}.target", "is required: name the network")
        for j, alias in enumerate(_string_list(f"{field}.aliases", attachment.aliases)):
            if not _ALIAS.fullmatch(alias):
                raise SpecError(f"{field}.aliases[{j}]", f"{alias!r} is invalid; use letters, digits, "
                                                         "'_', '.', '-' (a DNS name)")
        attachments.append(attachment)
    return attachments


def _file_refs(name: str, value) -> list[FileRef]:
    _require_type(name, value, list, "a list of objects with source, target, uid, gid, mode")
    refs, targets = [], set()
    for i, item in enumerate(value):
        field = f"{name}[{i}]"
        _object(field, item, FileRef)
        ref = from_dict(FileRef, {"source": None, **item})
        _require_type(f"{field}.source", ref.source, str, f"the name of a {name[:-1]}")
        for attr in ("target", "uid", "gid"):
            _string(f"{field}.{attr}", getattr(ref, attr))
        if not ref.target:
            ref.target = ref.source
        if name == "secrets" and ref.target.startswith("/") and not ref.target.startswith("/run/secrets/"):
            # docker allows only names under /run/secrets for secrets (not configs)
            raise SpecError(f"{field}.target", f"{ref.target!r}: a secret's target is a file name under "
                                               "/run/secrets; use a relative name")
        if ".." in ref.target.split("/"):
            raise SpecError(f"{field}.target", f"{ref.target!r} may not contain '..'")
        _require_type(f"{field}.mode", ref.mode, int, "a file mode such as 0o444 (292)")
        if not 0 <= ref.mode <= 0o7777:
            raise SpecError(f"{field}.mode", f"{ref.mode} is not a file mode; use 0 to 4095 (0o7777)")
        if ref.target in targets:
            raise SpecError(f"{field}.target", f"{ref.target!r} is used twice; give each a target of its own")
        targets.add(ref.target)
        refs.append(ref)
    return refs


def _legacy(data: dict) -> dict:
    """Specs stored before update_config existed carry update_parallelism: read it as
    update_config.parallelism, so that a client posting such a spec back is not refused."""
    if "update_parallelism" not in data:
        return data
    data = dict(data)
    parallelism = data.pop("update_parallelism")
    config = data.get("update_config")
    if config is None or (isinstance(config, dict) and "parallelism" not in config):
        data["update_config"] = dict(config or {}, parallelism=parallelism)
    return data


def parse_service_spec(data) -> ServiceSpec:
    """A service spec from its JSON form, every field checked: SpecError names the first
    bad one."""
    return ServiceSpec(**vars(_parse(data)))


def parse_service_spec_dict(data) -> dict:
    """`to_dict(parse_service_spec(data))`, without building the ServiceSpec."""
    stored = _default_spec()
    for name, value in vars(_parse(data)).items():
        stored[name] = plain(value)
    return stored


def _parse(data) -> _SpecDraft:
    _require_type("spec", data, dict, "a JSON object")
    data = _legacy(data)
    unknown = data.keys() - _SERVICE_FIELDS
    if unknown:
        raise SpecError(sorted(unknown)[0], f"unknown field; known fields are {', '.join(sorted(_SERVICE_FIELDS))}")
    for required in ("name", "image"):
        if not data.get(required):
            raise SpecError(required, "is required")
    name = _require_type("name", data["name"], str, "a string")
    if not _NAME.fullmatch(name):
        raise SpecError("name", f"{name!r} is invalid; use letters, digits, '_', '.', '-' "
                                "(up to 63 characters, starting with a letter or digit)")
    spec = _SpecDraft(name, _require_type("image", data["image"], str, "an image reference"))
    # A field not given keeps ServiceSpec's default, unvalidated: it is what validating the
    # empty form gives (tests/unit/test_spec.py holds every default to that), and these
    # checks were the larger part of parsing a short update on a busy leader.
    if "command" in data:
        spec.command = _string_list("command", data["command"])
    if "env" in data:
        spec.env = _string_list("env", data["env"])
        for i, item in enumerate(spec.env):
            if not item or item.startswith("="):
                raise SpecError(f"env[{i}]", f"{item!r} is invalid; use KEY=VALUE")
    if "labels" in data:
        spec.labels = _string_map("labels", data["labels"])
    if "container_labels" in data:
        spec.container_labels = _string_map("container_labels", data["container_labels"])
    spec.mode = data.get("mode", spec.mode)
    if spec.mode not in MODES:
        raise SpecError("mode", f"must be one of {', '.join(MODES)}, got {spec.mode!r}")
    if spec.mode.startswith("global"):
        if data.get("replicas") not in (None, 1):
            raise SpecError("replicas", "replicas can only be used with replicated or replicated-job mode")
    elif "replicas" in data:
        spec.replicas = _non_negative_int("replicas", data["replicas"])
    if "max_concurrent" in data:
        spec.max_concurrent = _non_negative_int("max_concurrent", data["max_concurrent"])
        if spec.max_concurrent and spec.mode != "replicated-job":
            raise SpecError("max_concurrent", "can only be used with replicated-job mode")
    if "constraints" in data:
        spec.constraints = _string_list("constraints", data["constraints"])
        for i, c in enumerate(spec.constraints):
            validate_constraint(f"constraints[{i}]", c)
    if "preferences" in data:
        spec.preferences = _string_list("preferences", data["preferences"])
        for i, p in enumerate(spec.preferences):
            if not p.startswith("spread="):
                raise SpecError(f"preferences[{i}]", f"{p!r} is invalid; use spread=node.labels.KEY")
    if "max_replicas_per_node" in data:
        spec.max_replicas_per_node = _non_negative_int("max_replicas_per_node", data["max_replicas_per_node"])
    if "reservations" in data:
        spec.reservations = _resources("reservations", data["reservations"])
    if "limits" in data:
        spec.limits = _resources("limits", data["limits"])
    if spec.limits.generic:
        raise SpecError("limits.generic", "generic resources can only be reserved, not limited")
    if "restart_policy" in data:
        spec.restart_policy = _restart_policy(data["restart_policy"])
    if "stop_grace_period" in data:
        spec.stop_grace_period = _seconds("stop_grace_period", data["stop_grace_period"])
    if "update_config" in data:
        spec.update_config = _update_config("update_config", data["update_config"], FAILURE_ACTIONS)
    if "rollback_config" in data:
        spec.rollback_config = _update_config("rollback_config", data["rollback_config"],
                                              ROLLBACK_FAILURE_ACTIONS)
    _container_fields(spec, data)
    spec.pull = data.get("pull", spec.pull)
    if spec.pull not in PULL_POLICIES:
        raise SpecError("pull", f"must be one of always, missing, never, got {spec.pull!r}")
    return spec
