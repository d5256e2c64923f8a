"""The routing mesh through a node without the task, as swarmpy builds it (since 13b54a1 over
the hosts' own link to the task's node), against the design before it (DNAT to the task's
address on the ingress overlay, across VXLAN; made by hand), in one run (issue 5,
docs/benchmarks.md).

    python bench/mesh_paths.py [--rounds 4] [--seconds 6]

Three hosts (tests/netns.py), a one-manager swarmpy cluster, one httpd task on h2 published
in ingress mode on 30080 and in host mode on 30081 (as in bench/overlay.py). On h3, which
runs no task, port 30084 is made by hand with iptables in h3's namespace (gone with the
namespace at the end): it DNATs to the task's ingress address and SNATs to h3's own ingress
address out of h3's ingress bridge, exactly the rules the mesh had before node forwarding.
(A hand-made detour over the link to h2's host-mode port, measured here before, is left out:
its connections reach the task from h3's address with the client's ports, as the mesh's own
do now, and the two kinds then collide in the task's TIME_WAIT; docs/benchmarks.md.) The client
is bench/overlay.py's load generator in h1's namespace; targets alternate in order each round.
Prints the median req/s per target and its ratio to the direct port.
"""
from __future__ import annotations

import argparse
import ipaddress
import re
import statistics
import sys
import time
from types import SimpleNamespace

from overlay import (DIRECT_PORT, HTTPD, MESH_PORT, Cleanup, HostCluster, Hosts, build, build_image, create, fetch,
                     loadgen, log, system_busy_s, wait, wait_running)


def iptables(host, *rule: str) -> None:
    done = host.run(["iptables", *rule], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"iptables {' '.join(rule)}: {done.stderr.strip()}")


def overlay_detour(via, task_addr: str, port: int, target: int) -> None:
    """On `via`: connections to `port` go to the task's ingress address over VXLAN (the mesh
    before node forwarding)."""
    addrs = via.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    found = re.findall(r"^\d+: (sp-\S+)\s+inet ([\d.]+)/(\d+)", addrs, re.M)
    bridge, own = next((dev, addr) for dev, addr, plen in found
                       if ipaddress.ip_address(task_addr) in ipaddress.ip_network(f"{addr}/{plen}", strict=False))
    iptables(via, "-t", "nat", "-I", "PREROUTING", "-p", "tcp", "--dport", str(port), "-m", "addrtype",
             "--dst-type", "LOCAL", "-j", "DNAT", "--to-destination", f"{task_addr}:{target}")
    iptables(via, "-t", "nat", "-I", "POSTROUTING", "-o", bridge, "-p", "tcp", "-m", "conntrack", "--ctstate",
             "DNAT", "--ctorigdstport", str(port), "-j", "SNAT", "--to-source", own)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    build()
    with Cleanup() as cleanup:
        hosts = Hosts(3)
        cleanup.add("hosts", hosts.close)
        image = ""
        for h in hosts:
            image = build_image(h.docker())
        c = HostCluster(SimpleNamespace(hosts=hosts.hosts), image, managers=1)
        cleanup.add("swarmpy cluster", c.teardown)
        m, (h1, h2, h3) = c.nodes[0], hosts.hosts
        create(m, "web", "--replicas", "1", "--constraint", "node.hostname==h2",
               "--publish", f"published={MESH_PORT},target=80",
               "--publish", f"published={DIRECT_PORT},target=80,mode=host", command=HTTPD)
        task = wait_running(m, "web", 1)[0]
        overlay_detour(h3, task["networks"][0]["addr"].split("/")[0], 30084, 80)
        targets = [("mesh via h3 (as built)", h3.addr, MESH_PORT), ("mesh via h3, VXLAN", h3.addr, 30084),
                   ("direct h2:30081", h2.addr, DIRECT_PORT)]
        for label, addr, port in targets:
            wait(lambda: fetch(h1, addr, port)[0], 30, f"{label} to answer")
        rates: dict[str, list[float]] = {t[0]: [] for t in targets}
        for r in range(args.rounds):
            for label, addr, port in (targets if r % 2 == 0 else targets[::-1]):
                loadgen(h1, addr, port, 1.0, args.concurrency)              # warm-up
                busy0 = system_busy_s()
                res = loadgen(h1, addr, port, args.seconds, args.concurrency)
                cpu_ms = 1000 * (system_busy_s() - busy0) / max(res["ok"], 1)
                rates[label].append(res["req_per_s"])
                log(f"round {r + 1} {label:22s} {res['req_per_s']:8.1f} req/s  errors {res['errors']}  "
                    f"machine CPU {cpu_ms:.3f} ms/request")
        direct = statistics.median(rates["direct h2:30081"])
        print()
        for label, values in rates.items():
            med = statistics.median(values)
            print(f"{label:22s} median {med:8.1f} req/s  ratio {med / direct:.2f}  rounds {values}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
