"""docker's `service create` / `service update` flags for the container spec, healthcheck,
log driver, mounts, published ports and update/rollback configs, turned into spec JSON.

Values are parsed as the docker CLI parses them (Go durations, `--mount` CSV, `--publish`
short and long syntax, `--ulimit name=soft[:hard]`), and bad ones fail with its texts:
`invalid argument "x" for "--health-interval" flag: time: invalid duration "x"`."""
from __future__ import annotations

import argparse
import csv
import ipaddress
import re
import shlex

from swarmpy.cli.parser import UsageError, invalid
from swarmpy.units import parse_go_duration, parse_memory

HEALTH_DURATIONS = (("interval", "--health-interval"), ("timeout", "--health-timeout"),
                    ("start_period", "--health-start-period"), ("start_interval", "--health-start-interval"))
LISTS = (("dns", "dns_nameservers"), ("dns-search", "dns_search"), ("dns-option", "dns_options"))


# -- flags ----------------------------------------------------------------------------------
def add_flags(p: argparse.ArgumentParser, update: bool) -> None:
    """The flags both commands share; `update` adds docker's -add/-rm forms of the lists."""
    p.add_argument("--entrypoint", help="overwrite the image's ENTRYPOINT")
    p.add_argument("--hostname", dest="container_hostname", help="container hostname")
    p.add_argument("-u", "--user", help="username or UID (format: <name|uid>[:<group|gid>])")
    p.add_argument("-w", "--workdir", help="working directory inside the container")
    p.add_argument("--stop-signal", help="signal to stop the container")
    p.add_argument("-t", "--tty", action="store_true", default=None, help="allocate a pseudo-TTY")
    p.add_argument("--read-only", action="store_true", default=None, help="mount the root filesystem read-only")
    p.add_argument("--init", action="store_true", default=None, help="run an init inside the container")
    p.add_argument("--cap-add", action="append", default=[], help="add Linux capabilities")
    p.add_argument("--cap-drop", action="append", default=[], help="drop Linux capabilities")
    p.add_argument("--health-cmd", help="command to run to check health")
    for _, flag in HEALTH_DURATIONS:
        p.add_argument(flag, help="health check time (ms|s|m|h)")
    p.add_argument("--health-retries", help="consecutive failures needed to report unhealthy")
    p.add_argument("--no-healthcheck", action="store_true", help="disable any container-specified HEALTHCHECK")
    p.add_argument("--log-driver", help="logging driver for the service")
    p.add_argument("--log-opt", action="append", default=[], help="logging driver options KEY=VALUE")
    for prefix in ("update", "rollback"):
        if prefix == "rollback":      # --update-parallelism is defined with the other create flags
            p.add_argument("--rollback-parallelism", help="tasks rolled back at a time (0: all at once)")
        p.add_argument(f"--{prefix}-delay", help=f"delay between {prefix}s (ns|us|ms|s|m|h)")
        p.add_argument(f"--{prefix}-failure-action", help="action on failure (\"pause\", \"continue\""
                                                          + (", \"rollback\")" if prefix == "update" else ")"))
        p.add_argument(f"--{prefix}-monitor", help="duration after each task to monitor for failure")
        p.add_argument(f"--{prefix}-max-failure-ratio", help="failure rate to tolerate")
        p.add_argument(f"--{prefix}-order", help="order of operations (\"start-first\", \"stop-first\")")
    if update:
        _add_update_lists(p)
    else:
        p.add_argument("--host", dest="extra_hosts", action="append", default=[],
                       help="set one or more custom host-to-IP mappings (host:ip)")
        for flag, _ in LISTS:
            p.add_argument(f"--{flag}", action="append", default=[])
        p.add_argument("--sysctl", action="append", default=[], help="sysctl options KEY=VALUE")
        p.add_argument("--ulimit", action="append", default=[], help="ulimit options NAME=SOFT[:HARD]")
        p.add_argument("--mount", action="append", default=[], help="attach a filesystem mount to the service")
        p.add_argument("-p", "--publish", action="append", default=[], help="publish a port as a node port")


def _add_update_lists(p: argparse.ArgumentParser) -> None:
    for flag in ("host", *(f for f, _ in LISTS), "sysctl", "ulimit", "mount", "publish"):
        p.add_argument(f"--{flag}-add", action="append", default=[])
        p.add_argument(f"--{flag}-rm", action="append", default=[])


# -- service create ---------------------------------------------------------------------------
def create_fields(args) -> dict:
    """The spec fields `service create` sets from these flags (absent ones keep their defaults)."""
    spec: dict = {}
    _scalars(args, spec)
    if args.extra_hosts:
        spec["hosts"] = [_host(h) for h in args.extra_hosts]
    for flag, field in LISTS:
        values = getattr(args, flag.replace("-", "_"))
        if values:
            spec[field] = [_dns(v) for v in values] if flag == "dns" else values
    if args.sysctl:
        spec["sysctls"] = dict(_kv("--sysctl", s) for s in args.sysctl)
    if args.ulimit:
        spec["ulimits"] = [_convert("--ulimit", u, parse_ulimit) for u in args.ulimit]
    spec["cap_add"], spec["cap_drop"] = list(args.cap_add), list(args.cap_drop)
    health = _create_healthcheck(args)
    if health is not None:
        spec["healthcheck"] = health
    if args.log_driver:
        spec["log_driver"] = {"name": args.log_driver, "options": dict(_kv("--log-opt", o) for o in args.log_opt)}
    elif args.log_opt:
        raise UsageError("--log-opt needs --log-driver")
    spec["mounts"] = [_convert("--mount", m, parse_mount) for m in args.mount]
    spec["ports"] = [port for p in args.publish for port in _convert("--publish", p, parse_publish)]
    for prefix in ("update", "rollback"):
        spec[f"{prefix}_config"] = _update_config(args, prefix, {})
    return spec


def _scalars(args, spec: dict) -> None:
    """Flags that set one field, alike in create and update."""
    if args.entrypoint is not None:
        spec["entrypoint"] = _convert("--entrypoint", args.entrypoint, shlex.split)
    for attr, field in (("container_hostname", "hostname"), ("user", "user"), ("workdir", "working_dir"),
                        ("stop_signal", "stop_signal")):
        if getattr(args, attr) is not None:
            spec[field] = getattr(args, attr)
    for attr in ("tty", "read_only", "init"):
        if getattr(args, attr) is not None:
            spec[attr] = getattr(args, attr)


def _create_healthcheck(args) -> dict | None:
    """docker's toHealthConfig: --no-healthcheck is ["NONE"]; any --health-* makes a check
    (without --health-cmd its test is empty: the image's, with these settings)."""
    settings = _health_settings(args)
    if args.no_healthcheck:
        if settings or args.health_cmd is not None:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return {"test": ["NONE"]}
    if not settings and not args.health_cmd:
        return None
    return {"test": ["CMD-SHELL", args.health_cmd] if args.health_cmd else [], **settings}


def _health_settings(args) -> dict:
    out = {}
    for field, flag in HEALTH_DURATIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            out[field] = _convert(flag, value, parse_go_duration)
    if args.health_retries is not None:
        out["retries"] = _convert("--health-retries", args.health_retries, _int)
    return out


def _update_config(args, prefix: str, current: dict) -> dict:
    """--update-* or --rollback-* flags over the current config."""
    config = dict(current)
    parallelism = getattr(args, f"{prefix}_parallelism", None)
    if parallelism is not None:
        config["parallelism"] = _convert(f"--{prefix}-parallelism", parallelism, _uint)
    for name in ("delay", "monitor"):
        value = getattr(args, f"{prefix}_{name}")
        if value is not None:
            config[name] = _convert(f"--{prefix}-{name}", value, parse_go_duration)
    ratio = getattr(args, f"{prefix}_max_failure_ratio")
    if ratio is not None:
        config["max_failure_ratio"] = _convert(f"--{prefix}-max-failure-ratio", ratio, _float)
    for name in ("failure_action", "order"):
        if getattr(args, f"{prefix}_{name}") is not None:
            config[name] = getattr(args, f"{prefix}_{name}")
    return config


# -- service update -----------------------------------------------------------------------------
def apply_update(args, spec: dict) -> None:
    """docker's `service update` rules for these flags, over the stored spec."""
    _scalars(args, spec)
    hosts = [h for h in spec.get("hosts", []) if not _host_removed(h, args.host_rm)]
    spec["hosts"] = _add_unique(hosts, [_host(h) for h in args.host_add])
    for flag, field in LISTS:
        attr = flag.replace("-", "_")
        kept = [v for v in spec.get(field, []) if v not in getattr(args, f"{attr}_rm")]
        added = getattr(args, f"{attr}_add")
        spec[field] = _add_unique(kept, [_dns(v) for v in added] if flag == "dns" else added)
    sysctls = {k: v for k, v in spec.get("sysctls", {}).items() if k not in args.sysctl_rm}
    spec["sysctls"] = dict(sysctls, **dict(_kv("--sysctl-add", s) for s in args.sysctl_add))
    ulimits = {u["name"]: u for u in spec.get("ulimits", []) if u["name"] not in args.ulimit_rm}
    ulimits.update((u["name"], u) for u in (_convert("--ulimit-add", x, parse_ulimit) for x in args.ulimit_add))
    spec["ulimits"] = list(ulimits.values())
    _update_caps(args, spec)
    _update_healthcheck(args, spec)
    if args.log_driver:
        spec["log_driver"] = {"name": args.log_driver, "options": dict(_kv("--log-opt", o) for o in args.log_opt)}
    elif args.log_opt:
        raise UsageError("--log-opt needs --log-driver")
    mounts = [m for m in spec.get("mounts", []) if m["target"] not in args.mount_rm]
    added = [_convert("--mount-add", m, parse_mount) for m in args.mount_add]
    spec["mounts"] = [m for m in mounts if m["target"] not in {a["target"] for a in added}] + added
    _update_ports(args, spec)
    for prefix in ("update", "rollback"):
        spec[f"{prefix}_config"] = _update_config(args, prefix, spec.get(f"{prefix}_config") or {})


def _add_unique(values: list, added: list) -> list:
    return values + [v for v in added if v not in values]


def _update_caps(args, spec: dict) -> None:
    # An added capability is no longer dropped, and the other way round.
    add, drop = [c.upper() for c in args.cap_add], [c.upper() for c in args.cap_drop]
    spec["cap_add"] = _add_unique([c for c in spec.get("cap_add", []) if c.upper() not in drop], args.cap_add)
    spec["cap_drop"] = _add_unique([c for c in spec.get("cap_drop", []) if c.upper() not in add], args.cap_drop)


def _update_healthcheck(args, spec: dict) -> None:
    """docker's updateHealthcheck: --no-healthcheck alone sets ["NONE"]; other --health-*
    flags change the current check (a NONE test becomes the image's)."""
    settings = _health_settings(args)
    if args.no_healthcheck:
        if settings or args.health_cmd is not None:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        spec["healthcheck"] = {"test": ["NONE"]}
        return
    if not settings and args.health_cmd is None:
        return
    check = dict(spec.get("healthcheck") or {})
    if check.get("test", [])[:1] == ["NONE"]:
        check["test"] = []
    check.update(settings)
    if args.health_cmd is not None:
        check["test"] = ["CMD-SHELL", args.health_cmd] if args.health_cmd else []
    spec["healthcheck"] = check


def _update_ports(args, spec: dict) -> None:
    removed = [port for p in args.publish_rm for port in _convert("--publish-rm", p, _publish_rm)]

    def gone(port: dict) -> bool:
        return any(port["target"] == r["target"] and port.get("protocol", "tcp") == r["protocol"]
                   and (not r["published"] or port.get("published") == r["published"]) for r in removed)

    ports = [p for p in spec.get("ports", []) if not gone(p)]
    for port in (x for p in args.publish_add for x in _convert("--publish-add", p, parse_publish)):
        # a port published again replaces the old entry (docker: same published port and protocol)
        ports = [p for p in ports if not (port["published"] and p.get("published") == port["published"]
                                          and p.get("protocol", "tcp") == port["protocol"])]
        ports.append(port)
    spec["ports"] = ports


def _publish_rm(text: str) -> list[dict]:
    # docker: "--publish-rm 80" or "80/udp" names the target port; a long form works too
    if re.fullmatch(r"\d+(/\w+)?", text):
        target, _, protocol = text.partition("/")
        return [{"target": _port(target, "invalid containerPort"), "protocol": _proto(protocol or "tcp"),
                 "published": 0}]
    return parse_publish(text)


def _host_removed(entry: str, removed: list[str]) -> bool:
    """--host-rm HOST or HOST:IP removes that host's "IP HOST" entry."""
    ip, *names = entry.split()
    for item in removed:
        host, rm_ip = _split_host(item)
        if host in names and (not rm_ip or rm_ip == ip):
            return True
    return False


# -- value parsers (docker's syntax and texts) ---------------------------------------------------------
def _convert(flag: str, value, parse):
    try:
        return parse(value)
    except ValueError as exc:
        raise invalid(flag, value, str(exc)) from None


def _kv(flag: str, text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise invalid(flag, text, "use KEY=VALUE")
    return key, value


def _uint(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return int(text)


def _int(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    return int(text)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax') from None


def _split_host(text: str) -> tuple[str, str]:
    """HOST:IP or HOST=IP (the IP may be an IPv6 address, brackets or not)."""
    match = re.match(r"([^:=]*)[:=](.*)", text)
    if match is None:
        return text, ""
    return match.group(1), match.group(2).strip("[]")


def _host(text: str) -> str:
    """docker's --host HOST:IP (or HOST=IP), stored as swarm stores it: "IP HOST"."""
    host, ip = _split_host(text)
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise invalid("--host", text, f'invalid IP address in add-host: "{ip}"') from None
    if not host:
        raise invalid("--host", text, "use HOST:IP")
    return f"{ip} {host}"


def _dns(text: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise invalid("--dns", text, f"IP address is not correctly formatted: {text}") from None
    return text


def parse_ulimit(text: str) -> dict:
    """docker's NAME=SOFT[:HARD] (hard defaults to soft)."""
    name, sep, limits = text.partition("=")
    if not sep:
        raise ValueError(f"invalid ulimit argument: {text}")
    parts = limits.split(":")
    if len(parts) > 2:
        raise ValueError(f"too many limit value arguments - {limits}, can only have up to two, `soft[:hard]`")
    try:
        soft, hard = int(parts[0]), int(parts[-1])
    except ValueError:
        raise ValueError(f"invalid ulimit argument: {text}") from None
    if soft > hard:
        raise ValueError(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")
    return {"name": name, "soft": soft, "hard": hard}


_MOUNT_KEYS = {"type": "type", "source": "source", "src": "source", "target": "target", "dst": "target",
               "destination": "target", "consistency": "consistency", "bind-propagation": "bind_propagation",
               "volume-driver": "volume_driver"}


def parse_mount(text: str) -> dict:
    """docker's --mount: type=volume|bind|tmpfs,source=,target=,readonly,volume-label=K=V,..."""
    mount: dict = {"type": "volume"}
    for field in next(csv.reader([text])):
        key, sep, value = field.partition("=")
        key = key.lower()
        if not sep:
            if key in ("readonly", "ro"):
                mount["read_only"] = True
            elif key == "volume-nocopy":
                mount["volume_nocopy"] = True
            else:
                raise ValueError(f"invalid field '{field}' must be a key=value pair")
        elif key in _MOUNT_KEYS:
            mount[_MOUNT_KEYS[key]] = value.lower() if key in ("type", "consistency", "bind-propagation") else value
        elif key in ("readonly", "ro", "volume-nocopy"):
            mount["read_only" if key != "volume-nocopy" else "volume_nocopy"] = _go_bool(key, value)
        elif key in ("volume-label", "volume-opt"):
            label, _, label_value = value.partition("=")
            mount.setdefault("volume_labels" if key == "volume-label" else "volume_driver_options", {})[label] \
                = label_value
        elif key == "tmpfs-size":
            mount["tmpfs_size_bytes"] = _tmpfs(key, value, parse_memory)
        elif key == "tmpfs-mode":
            mount["tmpfs_mode"] = _tmpfs(key, value, lambda v: int(v, 8))
        else:
            raise ValueError(f"unexpected key '{key}' in '{field}'")
    return _check_mount(mount)


def _check_mount(mount: dict) -> dict:
    if not mount.get("target"):
        raise ValueError("target is required")
    kind = mount["type"]
    for prefix, option_kind in (("volume_", "volume"), ("bind_", "bind"), ("tmpfs_", "tmpfs")):
        if kind != option_kind and any(k.startswith(prefix) for k in mount):
            raise ValueError(f"cannot mix '{option_kind}-*' options with mount type '{kind}'")
    return mount


def _go_bool(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise ValueError(f"invalid value for {key}: {value}")


def _tmpfs(key: str, value: str, parse) -> int:
    try:
        return parse(value)
    except ValueError:
        raise ValueError(f"invalid value for {key}: {value}") from None


def parse_publish(text: str) -> list[dict]:
    """docker's --publish: long published=8080,target=80,protocol=udp,mode=host, or short
    [PUBLISHED:]TARGET[/PROTOCOL] with ranges (mode ingress)."""
    if re.search(r"\w+=\w+", text):
        return [_publish_long(text)]
    spec, _, protocol = text.partition("/")
    protocol = _proto(protocol or "tcp")
    parts = spec.split(":")
    if len(parts) > 2:
        raise ValueError("hostip is not supported")
    targets = _port_range(parts[-1], "invalid containerPort")
    published = _port_range(parts[0], "invalid hostPort") if len(parts) == 2 else [0] * len(targets)
    if len(published) != len(targets):
        raise ValueError(f"invalid ranges specified for container and host Ports: {parts[-1]} and {parts[0]}")
    return [{"target": t, "published": p, "protocol": protocol, "mode": "ingress"}
            for t, p in zip(targets, published)]


def _publish_long(text: str) -> dict:
    port = {"protocol": "tcp", "mode": "ingress"}
    for field in next(csv.reader([text])):
        key, sep, value = field.lower().partition("=")
        if not sep or not key:
            raise ValueError(f"invalid field: {field}")
        if key == "protocol":
            port["protocol"] = _proto(value, f"invalid protocol value '{value}'")
        elif key == "mode":
            if value not in ("ingress", "host"):
                raise ValueError(f"invalid publish mode value ({value}): must be either 'ingress' or 'host'")
            port["mode"] = value
        elif key in ("target", "published"):
            port[key] = _port(value, f'strconv.ParseUint: parsing "{value}": invalid syntax')
        else:
            raise ValueError(f"invalid field key: {key}")
    if not port.get("target"):
        raise ValueError("missing mandatory field 'target'")
    port.setdefault("published", 0)
    return port


def _proto(value: str, message: str = "") -> str:
    if value not in ("tcp", "udp", "sctp"):
        raise ValueError(message or f"invalid proto: {value}")
    return value


def _port(text: str, message: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{message}: {text}" if not message.startswith("strconv") else message)
    return int(text)


def _port_range(text: str, message: str) -> list[int]:
    low, sep, high = text.partition("-")
    first = _port(low, message)
    last = _port(high, message) if sep else first
    if last < first:
        raise ValueError(f"{message}: {text}")
    return list(range(first, last + 1))
