"""docker's `service create` / `service update` flags for the container spec, healthcheck,
log driver, mounts, published ports and update/rollback configs, turned into spec JSON.

Values are parsed as the docker CLI parses them (Go durations here, the rest in
dockeropts.py), and bad ones fail with its texts:
`invalid argument "x" for "--health-interval" flag: time: invalid duration "x"`."""
from __future__ import annotations

import argparse
import re
import shlex

from swarmpy.cli.dockeropts import (dns_server, float_, host_entry, int_, kv, parse_file_ref, parse_mount,
                                    parse_publish, parse_ulimit, port_number, protocol_name, split_host, uint)
from swarmpy.cli.client import DaemonError
from swarmpy.cli.parser import UsageError, invalid
from swarmpy.units import parse_go_duration

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
    p.add_argument("--endpoint-mode", help="endpoint mode (vip or dnsrr)")
    if update:
        _add_update_lists(p)
        p.add_argument("--network-add", action="append", default=[],
                       help="add a network: NAME, or name=NAME,alias=A[,alias=B]")
        p.add_argument("--network-rm", action="append", default=[], help="remove a network (name or id)")
        for kind in ("secret", "config"):
            p.add_argument(f"--{kind}-add", action="append", default=[], help=f"add or update a {kind}")
            p.add_argument(f"--{kind}-rm", action="append", default=[], help=f"remove a {kind} by name")
    else:
        for kind in ("secret", "config"):
            p.add_argument(f"--{kind}", action="append", default=[], dest=f"{kind}s",
                           help=f"specify a {kind} to expose: NAME or source=NAME,target=,uid=,gid=,mode=")
        p.add_argument("--host", dest="extra_hosts", action="append", default=[],
                       help="set one or more custom host-to-IP mappings (host:ip)")
        for flag, _ in LISTS:
            p.add_argument(f"--{flag}", action="append", default=[])
        p.add_argument("--sysctl", action="append", default=[], help="sysctl options KEY=VALUE")
        p.add_argument("--ulimit", action="append", default=[], help="ulimit options NAME=SOFT[:HARD]")
        p.add_argument("--mount", action="append", default=[], help="attach a filesystem mount to the service")
        p.add_argument("-p", "--publish", action="append", default=[], help="publish a port as a node port")
        p.add_argument("--network", action="append", default=[], dest="networks",
                       help="network attachment: NAME, or name=NAME,alias=A[,alias=B]")


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
        spec["hosts"] = [host_entry(h) for h in args.extra_hosts]
    for flag, field in LISTS:
        values = getattr(args, flag.replace("-", "_"))
        if values:
            spec[field] = [dns_server(v) for v in values] if flag == "dns" else values
    if args.sysctl:
        spec["sysctls"] = dict(kv("--sysctl", s) for s in args.sysctl)
    if args.ulimit:
        spec["ulimits"] = [_convert("--ulimit", u, parse_ulimit) for u in args.ulimit]
    spec["cap_add"], spec["cap_drop"] = list(args.cap_add), list(args.cap_drop)
    health = _create_healthcheck(args)
    if health is not None:
        spec["healthcheck"] = health
    if args.log_driver:
        spec["log_driver"] = {"name": args.log_driver, "options": dict(kv("--log-opt", o) for o in args.log_opt)}
    elif args.log_opt:
        raise UsageError("--log-opt needs --log-driver")
    spec["mounts"] = [_convert("--mount", m, parse_mount) for m in args.mount]
    spec["ports"] = [port for p in args.publish for port in _convert("--publish", p, parse_publish)]
    for prefix in ("update", "rollback"):
        spec[f"{prefix}_config"] = _update_config(args, prefix, {})
    for kind in ("secret", "config"):
        spec[f"{kind}s"] = [_convert(f"--{kind}", r, parse_file_ref) for r in getattr(args, f"{kind}s")]
    spec["networks"] = [_convert("--network", n, parse_network) for n in args.networks]
    _endpoint_mode(args, spec)
    return spec


# -- networks -----------------------------------------------------------------------------------
def parse_network(text: str) -> dict:
    """docker's --network: NAME, or the long form name=NAME,alias=A,alias=B (the manager
    resolves the name to the network's id)."""
    if "=" not in text:
        if not text:
            raise ValueError("network name/id is not specified")
        return {"target": text, "aliases": []}
    attachment: dict = {"target": "", "aliases": []}
    for field in text.split(","):
        key, sep, value = field.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key:
            raise ValueError(f"invalid field {field}")
        if key in ("name", "target"):
            attachment["target"] = value
        elif key == "alias":
            attachment["aliases"].append(value)
        elif key in ("driver-opt", "ip", "ip6"):
            raise ValueError(f"{key} is not supported by swarmpy's overlay networks; use name= and alias=")
        else:
            raise ValueError(f"invalid field key {key}")
    if not attachment["target"]:
        raise ValueError("network name/id is not specified")
    return attachment


def endpoint_mode(text: str) -> str:
    mode = text.lower()                     # docker lower-cases it
    if mode not in ("vip", "dnsrr"):
        raise ValueError("use vip or dnsrr")
    return mode


def _endpoint_mode(args, spec: dict) -> None:
    if args.endpoint_mode is not None:
        spec["endpoint_mode"] = _convert("--endpoint-mode", args.endpoint_mode, endpoint_mode)


def update_networks(args, spec: dict, resolve) -> None:
    """docker's `service update --network-rm/--network-add`: `resolve(ref)` gives a network's
    id (the stored attachments name networks by id); the result is sorted by id as docker's."""
    if not args.network_rm and not args.network_add:
        return
    removed = {resolve(ref) for ref in args.network_rm}
    kept = [a for a in spec.get("networks") or [] if a["target"] not in removed]
    attached = {a["target"] for a in kept}
    for attachment in (_convert("--network-add", n, parse_network) for n in args.network_add):
        network_id = resolve(attachment["target"])
        if network_id in attached:
            raise DaemonError(0, f"service is already attached to network {attachment['target']}")
        attached.add(network_id)
        kept.append(dict(attachment, target=network_id))
    spec["networks"] = sorted(kept, key=lambda a: a["target"])


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
        out["retries"] = _convert("--health-retries", args.health_retries, int_)
    return out


def _update_config(args, prefix: str, current: dict) -> dict:
    """--update-* or --rollback-* flags over the current config."""
    config = dict(current)
    parallelism = getattr(args, f"{prefix}_parallelism", None)
    if parallelism is not None:
        config["parallelism"] = _convert(f"--{prefix}-parallelism", parallelism, uint)
    for name in ("delay", "monitor"):
        value = getattr(args, f"{prefix}_{name}")
        if value is not None:
            config[name] = _convert(f"--{prefix}-{name}", value, parse_go_duration)
    ratio = getattr(args, f"{prefix}_max_failure_ratio")
    if ratio is not None:
        config["max_failure_ratio"] = _convert(f"--{prefix}-max-failure-ratio", ratio, float_)
    for name in ("failure_action", "order"):
        if getattr(args, f"{prefix}_{name}") is not None:
            config[name] = getattr(args, f"{prefix}_{name}")
    return config


# -- service update -----------------------------------------------------------------------------
def apply_update(args, spec: dict) -> None:
    """docker's `service update` rules for these flags, over the stored spec."""
    _scalars(args, spec)
    hosts = [h for h in spec.get("hosts", []) if not _host_removed(h, args.host_rm)]
    spec["hosts"] = _add_unique(hosts, [host_entry(h) for h in args.host_add])
    for flag, field in LISTS:
        attr = flag.replace("-", "_")
        kept = [v for v in spec.get(field, []) if v not in getattr(args, f"{attr}_rm")]
        added = getattr(args, f"{attr}_add")
        spec[field] = _add_unique(kept, [dns_server(v) for v in added] if flag == "dns" else added)
    sysctls = {k: v for k, v in spec.get("sysctls", {}).items() if k not in args.sysctl_rm}
    spec["sysctls"] = dict(sysctls, **dict(kv("--sysctl-add", s) for s in args.sysctl_add))
    ulimits = {u["name"]: u for u in spec.get("ulimits", []) if u["name"] not in args.ulimit_rm}
    ulimits.update((u["name"], u) for u in (_convert("--ulimit-add", x, parse_ulimit) for x in args.ulimit_add))
    spec["ulimits"] = list(ulimits.values())
    _update_caps(args, spec)
    _update_healthcheck(args, spec)
    if args.log_driver:
        spec["log_driver"] = {"name": args.log_driver, "options": dict(kv("--log-opt", o) for o in args.log_opt)}
    elif args.log_opt:
        raise UsageError("--log-opt needs --log-driver")
    mounts = [m for m in spec.get("mounts", []) if m["target"] not in args.mount_rm]
    added = [_convert("--mount-add", m, parse_mount) for m in args.mount_add]
    spec["mounts"] = [m for m in mounts if m["target"] not in {a["target"] for a in added}] + added
    _update_ports(args, spec)
    for prefix in ("update", "rollback"):
        spec[f"{prefix}_config"] = _update_config(args, prefix, spec.get(f"{prefix}_config") or {})
    for kind in ("secret", "config"):
        _update_file_refs(args, kind, spec)
    _endpoint_mode(args, spec)


def _update_file_refs(args, kind: str, spec: dict) -> None:
    """--KIND-rm by name, then --KIND-add (replacing a reference to the same target)."""
    removed = set(getattr(args, f"{kind}_rm"))
    added = [_convert(f"--{kind}-add", r, parse_file_ref) for r in getattr(args, f"{kind}_add")]
    targets = {a.get("target") or a["source"] for a in added}
    spec[f"{kind}s"] = [r for r in spec.get(f"{kind}s", [])
                        if r["source"] not in removed and (r.get("target") or r["source"]) not in targets] + added


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
        return [{"target": port_number(target, "invalid containerPort"),
                 "protocol": protocol_name(protocol or "tcp"), "published": 0}]
    return parse_publish(text)


def _host_removed(entry: str, removed: list[str]) -> bool:
    """--host-rm HOST or HOST:IP removes that host's "IP HOST" entry."""
    ip, *names = entry.split()
    for item in removed:
        host, rm_ip = split_host(item)
        if host in names and (not rm_ip or rm_ip == ip):
            return True
    return False


def _convert(flag: str, value, parse):
    try:
        return parse(value)
    except ValueError as exc:
        raise invalid(flag, value, str(exc)) from None
