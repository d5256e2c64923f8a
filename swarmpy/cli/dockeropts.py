"""Values in the docker CLI's syntax, with its error texts: `--mount` CSV, `--publish`
short and long forms, `--ulimit`, `--host`, `--dns`, and Go's number parsing messages.
Each parser raises ValueError with docker's text (or a UsageError naming its flag)."""
from __future__ import annotations

import csv
import ipaddress
import re

from swarmpy.cli.parser import invalid
from swarmpy.units import parse_memory


def kv(flag: str, text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise invalid(flag, text, "use KEY=VALUE")
    return key, value


def uint(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    return int(text)


def int_(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    return int(text)


def float_(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{text}": invalid syntax') from None


def split_host(text: str) -> tuple[str, str]:
    """HOST:IP or HOST=IP (the IP may be an IPv6 address, brackets or not)."""
    match = re.match(r"([^:=]*)[:=](.*)", text)
    if match is None:
        return text, ""
    return match.group(1), match.group(2).strip("[]")


def host_entry(text: str) -> str:
    """docker's --host HOST:IP (or HOST=IP), stored as swarm stores it: "IP HOST"."""
    host, ip = split_host(text)
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise invalid("--host", text, f'invalid IP address in add-host: "{ip}"') from None
    if not host:
        raise invalid("--host", text, "use HOST:IP")
    return f"{ip} {host}"


def dns_server(text: str) -> str:
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


_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which docker's boolean flags and options use."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _go_bool(key: str, value: str) -> bool:
    try:
        return parse_bool(value)
    except ValueError:
        raise ValueError(f"invalid value for {key}: {value}") from None


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
    protocol = protocol_name(protocol or "tcp")
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
            port["protocol"] = protocol_name(value, f"invalid protocol value '{value}'")
        elif key == "mode":
            if value not in ("ingress", "host"):
                raise ValueError(f"invalid publish mode value ({value}): must be either 'ingress' or 'host'")
            port["mode"] = value
        elif key in ("target", "published"):
            port[key] = port_number(value, f'strconv.ParseUint: parsing "{value}": invalid syntax')
        else:
            raise ValueError(f"invalid field key: {key}")
    if not port.get("target"):
        raise ValueError("missing mandatory field 'target'")
    port.setdefault("published", 0)
    return port


def protocol_name(value: str, message: str = "") -> str:
    if value not in ("tcp", "udp", "sctp"):
        raise ValueError(message or f"invalid proto: {value}")
    return value


def port_number(text: str, message: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{message}: {text}" if not message.startswith("strconv") else message)
    return int(text)


def _port_range(text: str, message: str) -> list[int]:
    low, sep, high = text.partition("-")
    first = port_number(low, message)
    last = port_number(high, message) if sep else first
    if last < first:
        raise ValueError(f"{message}: {text}")
    return list(range(first, last + 1))


def parse_file_ref(text: str) -> dict:
    """docker's --secret / --config: NAME, or source=NAME[,target=T][,uid=U][,gid=G][,mode=0444]
    (mode in Go's base-0 syntax: 0400 is octal)."""
    if "=" not in text:
        return {"source": text}
    ref: dict = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"invalid field '{part}' must be a key=value pair")
        if key in ("source", "src"):
            ref["source"] = value
        elif key in ("target", "uid", "gid"):
            ref[key] = value
        elif key == "mode":
            try:
                ref["mode"] = int(value, 8 if value.startswith("0") and value != "0" else 10)
            except ValueError:
                raise ValueError(f'strconv.ParseUint: parsing "{value}": invalid syntax') from None
        else:
            raise ValueError(f"invalid field key '{key}'")
    if not ref.get("source"):
        raise ValueError("source is required")
    return ref
