"""The routing mesh's routes over the hosts' own link (docs/networks.md, "The routing mesh").

A node that takes a mesh connection for a task on another node forwards it to that node's
ingress address (rules.py, node forwarding).  Inside the ingress subnet that address is
reached over VXLAN, which on a busy node costs about twice the CPU of plain routing
(docs/benchmarks.md); a /32 route via the other node's underlay address sends it over the
link instead, unencapsulated.  Only a node whose underlay address is on one of this node's
links gets such a route: a router between the two would not know the ingress address.

Our routes carry `proto 95`, so they are listed and removed without touching anyone else's.
"""
from __future__ import annotations

import json
import subprocess
from typing import Mapping

PROTO = "95"
TIMEOUT_S = 10.0


class RouteError(RuntimeError):
    """An `ip route` call failed; the message carries its stderr."""


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:     # no `ip`, or it hung: no routes, not a crash
        raise RouteError(f"ip {' '.join(args)}: {exc}") from None
    if done.returncode != 0:
        raise RouteError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def ours() -> dict[str, tuple[str, str]]:
    """Our routes now: ingress address -> (via, dev)."""
    return {r["dst"]: (r.get("gateway", ""), r.get("dev", ""))
            for r in json.loads(_ip("-j", "route", "show", "proto", PROTO) or "[]")}


def on_link_dev(addr: str) -> str | None:
    """The device through which `addr` is a direct neighbour of this node; None when a
    gateway is between, when it is this node's own address, or when it is unreachable."""
    try:
        route = json.loads(_ip("-j", "route", "get", addr))[0]
    except (RouteError, ValueError, IndexError):
        return None
    if route.get("type", "unicast") != "unicast" or route.get("gateway"):
        return None
    return route.get("dev") or None


def sync(wanted: Mapping[str, str]) -> dict[str, str]:
    """Make our routes exactly `wanted` (another node's ingress address -> its underlay
    address), leaving out the nodes that are not on a link of ours; returns the routes in
    place, in the same form.  Raises RouteError when one cannot be written or removed."""
    current = ours()
    placed: dict[str, str] = {}
    for addr, underlay in sorted(wanted.items()):
        dev = on_link_dev(underlay)
        if dev is None:
            continue
        if current.get(addr) != (underlay, dev):
            _ip("route", "replace", f"{addr}/32", "via", underlay, "dev", dev, "proto", PROTO)
        placed[addr] = underlay
    for addr in sorted(current.keys() - placed.keys()):
        _ip("route", "del", f"{addr}/32", "proto", PROTO)
    return placed
