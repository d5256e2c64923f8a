"""Short port syntax `[ip:][published:]target[/proto]` to docker's long form,
as docker/cli's toServicePortConfigs (go-connections nat.ParsePortSpec, then
opts.ConvertPortToPortConfig): mode ingress, ranges expanded, host IP ignored
with docker's warning."""
from __future__ import annotations

import ipaddress


def _parse_port(text: str) -> int:
    # strconv.ParseUint(text, 10, 16)
    if not text.isdigit() or not text.isascii() or int(text) > 65535:
        raise ValueError(f'invalid port "{text}"')
    return int(text)


def parse_port_range(text: str) -> tuple[int, int]:
    if text == "":
        raise ValueError("empty string specified for ports")
    if "-" not in text:
        port = _parse_port(text)
        return port, port
    start_text, end_text = text.split("-", 1)
    start, end = _parse_port(start_text), _parse_port(end_text)
    if end < start:
        raise ValueError(f"invalid range specified for port: {text}")
    return start, end


def _split_parts(raw: str) -> tuple[str, str, str]:
    parts = raw.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _host_ip(ip: str) -> str:
    if ip.startswith("["):
        if not ip.endswith("]"):
            raise ValueError(f"invalid IP address {ip}")
        ip = ip[1:-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"invalid IP address: {ip}") from None
    return ip


def parse_port_spec(raw: str) -> tuple[list[dict], list[str]]:
    """The long-form port dicts for one short spec, and docker's warnings."""
    ip, host, container = _split_parts(raw)
    port, _, proto = container.partition("/")
    proto = (proto or "tcp").lower() if port else ""  # nat.SplitProtoPort
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid proto: {proto}")
    ip = _host_ip(ip)
    if port == "":
        raise ValueError(f"no port specified: {raw}<empty>")
    try:
        start, end = parse_port_range(port)
    except ValueError:
        raise ValueError(f"invalid containerPort: {port}") from None
    host_range = _host_range(host, port, start, end)
    return _port_configs(ip, host, host_range, start, end, proto)


def _host_range(host: str, port: str, start: int, end: int) -> tuple[int, int] | None:
    if host == "":
        return None
    try:
        host_start, host_end = parse_port_range(host)
    except ValueError:
        raise ValueError(f"invalid hostPort: {host}") from None
    # A host range for one container port is allowed (one port per host port);
    # otherwise both ranges must have the same length.
    if end - start != host_end - host_start and end != start:
        raise ValueError(f"invalid ranges specified for container and host Ports: "
                         f"{port} and {host}")
    return host_start, host_end


def _port_configs(ip: str, host: str, host_range, start: int, end: int,
                  proto: str) -> tuple[list[dict], list[str]]:
    configs: list[dict] = []
    warnings: list[str] = []
    # docker sorts the container ports as strings ("1000/tcp" < "999/tcp")
    for target in sorted(range(start, end + 1), key=lambda p: f"{p}/{proto}"):
        if host_range is None:
            published = [None]
        elif start == end:
            published = list(range(host_range[0], host_range[1] + 1))
        else:
            published = [host_range[0] + target - start]
        if ip and not ipaddress.ip_address(ip).is_unspecified:
            shown = f"[{ip}]" if ":" in ip else ip
            host_text = "-".join(map(str, (published[0], published[-1]))) \
                if len(published) > 1 else str(published[0] or "")
            warnings.append(f"ignoring IP-address ({shown}:{host_text}:{target}/{proto}) "
                            "service will listen on '0.0.0.0'")
        for pub in published:
            config = {"mode": "ingress", "target": target, "protocol": proto}
            if pub is not None:
                config["published"] = pub
            configs.append(config)
    return configs, warnings
