"""Where the node's resolver sends names that are not the cluster's: the DNS servers the
querying task's spec names (`--dns`), else the node's own (/etc/resolv.conf)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from worker.agent import Agent

RESOLV_CONF = "/etc/resolv.conf"


def host_nameservers(path: str = RESOLV_CONF) -> list[str]:
    try:
        with open(path) as f:
            return [line.split()[1] for line in f
                    if line.startswith("nameserver") and len(line.split()) > 1]
    except OSError:
        return []


def upstream_for(agent: "Agent") -> Callable[[str], list[str]]:
    def upstream(src_ip: str) -> list[str]:
        for controller in agent.controllers.values():
            if any(a["addr"] == src_ip for a in controller.task.get("networks") or []):
                servers = controller.task["spec"].get("dns_nameservers") or []
                if servers:
                    return list(servers)
        return host_nameservers()
    return upstream
