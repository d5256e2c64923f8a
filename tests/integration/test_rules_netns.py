"""worker/network/rules.py and routes.py against the real kernel, in network namespaces of our own.

Every namespace is named `sprt<tag><role>` with a random tag and removed by name afterwards
(with the processes this module started in it); interfaces are created directly inside those
namespaces and use addresses in 10.99.<x>.0/24 only.  The root namespace's links and iptables
are never touched.  Programs run in a namespace through `nsenter --net=/run/netns/NAME`
(not `ip netns exec`, which remounts /sys).

1. VIP load balancing in a "client" namespace (as in a container's): 200 connections to the
   VIP spread over two backend namespaces; rewritten to one backend, all go there; with none,
   connections are refused at once.  Docker's DNS chains there stay as they were.
2. The routing mesh in a "node" namespace with an ingress bridge (docker's FORWARD setup
   mimicked: DOCKER-USER and a DROP policy): an external client reaching NODE_IP:PUBLISHED
   lands on the backends, which see the node's bridge address as source; the node itself
   reaches them through 127.0.0.1 too; an empty port is refused; remove_ingress leaves
   `iptables-save` as it was.
3. The mesh's routes over the link: a /32 route (proto 95) only to a node on one of the
   namespace's links, none to one behind a router or to itself; all of ours removed, nobody
   else's touched.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from worker.network import rules  # noqa: E402

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    parts = env.get("PATH", "/usr/bin:/bin").split(":")
    env["PATH"] = ":".join(parts + [p for p in _SBIN if p not in parts])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    for tool in ("ip", "nsenter", "iptables", "iptables-save", "iptables-restore"):
        if shutil.which(tool, path=_env()["PATH"]) is None:
            return f"`{tool}` is not installed"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10,
                       env=_env())
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`ip netns` is unavailable: {exc}"
    return None


_reason = _unavailable()
if _reason:
    pytest.skip(_reason, allow_module_level=True)


SERVER = r"""
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(512)
print("ready", flush=True)
while True:
    c, peer = s.accept()
    try:
        c.sendall(f"{name} {peer[0]}\n".encode())
    finally:
        c.close()
"""

CLIENT = r"""
import collections, json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names, peers, errors = collections.Counter(), collections.Counter(), collections.Counter()
t0 = time.monotonic()
for _ in range(n):
    try:
        with socket.create_connection((host, port), timeout=3) as c:
            data = b""
            while chunk := c.recv(256):
                data += chunk
        name, peer = data.decode().split()
        names[name] += 1
        peers[peer] += 1
    except OSError as exc:
        errors[type(exc).__name__] += 1
print(json.dumps({"names": names, "peers": peers, "errors": errors,
                  "elapsed": time.monotonic() - t0}))
"""


class Lab:
    """Namespaces, links and processes of one test; `close()` removes all of them by name."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)          # 4 hex chars: sprt<tag><role>
        self.netns: list[str] = []
        self.procs: list[subprocess.Popen] = []

    # -- plumbing ------------------------------------------------------------------------------
    def sh(self, *argv: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=30, env=_env(), cwd=REPO)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def enter(self, ns: str) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{ns}"]

    def ns_sh(self, ns: str, *argv: str, input: str | None = None, check: bool = True) -> str:
        return self.sh(*self.enter(ns), *argv, input=input, check=check)

    def add_ns(self, role: str) -> str:
        name = f"sprt{self.tag}{role}"
        self.sh("ip", "netns", "add", name)
        self.netns.append(name)
        self.sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def veth(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        """A veth pair created directly in the two namespaces (never in the root one)."""
        self.sh("ip", "link", "add", if_a, "netns", ns_a, "type", "veth",
                "peer", "name", if_b, "netns", ns_b)
        self.sh("ip", "-n", ns_a, "link", "set", if_a, "up")
        self.sh("ip", "-n", ns_b, "link", "set", if_b, "up")

    def addr(self, ns: str, ifname: str, cidr: str) -> None:
        self.sh("ip", "-n", ns, "addr", "add", cidr, "dev", ifname)

    def bridge(self, ns: str, name: str, ports: list[str]) -> None:
        self.sh("ip", "-n", ns, "link", "add", name, "type", "bridge")
        self.sh("ip", "-n", ns, "link", "set", name, "up")
        for port in ports:
            self.sh("ip", "-n", ns, "link", "set", port, "master", name)

    def sysctl(self, ns: str, key: str, value: str | None = None) -> str:
        path = "/proc/sys/" + key.replace(".", "/")
        if value is not None:
            self.ns_sh(ns, "sh", "-c", f'printf %s {value} > "$0"', path)
        return self.ns_sh(ns, "cat", path).strip()

    # -- processes -----------------------------------------------------------------------------
    def holder(self, ns: str) -> int:
        """The pid of a `sleep` inside `ns` (nsenter execs it), for rules' nsenter -t PID.
        Returned only once the process is in `ns`: until nsenter's setns, its pid names the
        test's own netns, and rules written through it went there (a CI flake, which left
        SWARMPY-VIP chains in the machine's own tables)."""
        proc = subprocess.Popen(self.enter(ns) + ["sleep", "120"], env=_env())
        self.procs.append(proc)
        target = os.stat(f"/run/netns/{ns}").st_ino
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino != target:
            assert proc.poll() is None and time.monotonic() < deadline, f"the holder never entered {ns}"
            time.sleep(0.005)
        return proc.pid

    def server(self, ns: str, name: str, port: int) -> None:
        proc = subprocess.Popen(self.enter(ns) + [sys.executable, "-c", SERVER, name, str(port)],
                                stdout=subprocess.PIPE, text=True, env=_env())
        self.procs.append(proc)
        assert proc.stdout.readline().strip() == "ready", f"server {name} in {ns} did not start"

    def connect(self, ns: str, host: str, port: int, n: int) -> dict:
        out = self.ns_sh(ns, sys.executable, "-c", CLIENT, host, str(port), str(n))
        return json.loads(out)

    def python(self, ns: str, code: str, *args: str) -> str:
        return self.ns_sh(ns, sys.executable, "-c", code, *args)

    def save(self, ns: str) -> str:
        """iptables-save of `ns` without its comments and packet counters."""
        out = self.ns_sh(ns, "iptables-save")
        lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", ln) for ln in out.splitlines()
                 if ln and not ln.startswith("#")]
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if proc.stdout:
                proc.stdout.close()
        for name in reversed(self.netns):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30,
                           env=_env())


@pytest.fixture
def lab():
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def _subnet() -> int:
    return 10 + secrets.randbelow(200)


# -- 1. VIPs in a container-like namespace -----------------------------------------------------
DOCKER_DNS = """*nat
:DOCKER_OUTPUT - [0:0]
:DOCKER_POSTROUTING - [0:0]
-A OUTPUT -d 127.0.0.11/32 -j DOCKER_OUTPUT
-A POSTROUTING -d 127.0.0.11/32 -j DOCKER_POSTROUTING
-A DOCKER_OUTPUT -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:41234
-A DOCKER_POSTROUTING -s 127.0.0.11/32 -p udp -m udp --sport 41234 -j SNAT --to-source :53
COMMIT
"""


def _docker_lines(save: str) -> list[str]:
    return [ln for ln in save.splitlines() if "DOCKER_" in ln]


def test_vip_balancing_in_a_client_namespace(lab: Lab):
    x = _subnet()
    net = f"10.99.{x}"
    hub, client, b1, b2 = (lab.add_ns(r) for r in ("h", "c", "b1", "b2"))
    for ns, port in ((client, "vc"), (b1, "v1"), (b2, "v2")):
        lab.veth(ns, "eth0", hub, port)
    lab.bridge(hub, "br0", ["vc", "v1", "v2"])
    lab.addr(client, "eth0", f"{net}.1/24")
    lab.addr(b1, "eth0", f"{net}.11/24")
    lab.addr(b2, "eth0", f"{net}.12/24")
    lab.server(b1, "b1", 8080)
    lab.server(b2, "b2", 8080)
    lab.ns_sh(client, "iptables-restore", "--noflush", input=DOCKER_DNS)
    docker_before = _docker_lines(lab.save(client))
    pid = lab.holder(client)
    vip = f"{net}.100"

    def services(*addrs: str) -> list[dict]:
        return [{"id": "s1", "name": "stack_web", "endpoint_mode": "vip", "vip": vip,
                 "tasks": [{"id": f"t{i}", "addr": a} for i, a in enumerate(addrs)]},
                {"id": "s2", "name": "stack_dns", "endpoint_mode": "dnsrr", "vip": "",
                 "tasks": [{"id": "t9", "addr": f"{net}.11"}]}]

    rules.sync_vips(pid, services(f"{net}.12", f"{net}.11"))
    rules.sync_vips(pid, services(f"{net}.11", f"{net}.12"))      # again: hooks stay single
    save = lab.save(client)
    assert save.count(f"-A OUTPUT -j {rules.VIP_CHAIN}\n") == 1
    assert save.count(f"-A OUTPUT -j {rules.VIP_EMPTY_CHAIN}\n") == 1

    res = lab.connect(client, vip, 8080, 200)
    assert not res["errors"], res
    assert res["names"].get("b1", 0) >= 50 and res["names"].get("b2", 0) >= 50, res

    rules.sync_vips(pid, services(f"{net}.12"))
    res = lab.connect(client, vip, 8080, 200)
    assert res["names"] == {"b2": 200} and not res["errors"], res

    rules.sync_vips(pid, services())
    res = lab.connect(client, vip, 8080, 5)
    assert res["errors"] == {"ConnectionRefusedError": 5}, res
    assert res["elapsed"] < 2.0, res

    assert _docker_lines(lab.save(client)) == docker_before      # docker's DNS chains untouched
    with pytest.raises(rules.RuleError, match="NOPE|exist|chain"):
        rules.apply_in_netns(pid, "*nat\n-A NOPE -j ACCEPT\nCOMMIT\n")

    rules.remove_vips(pid)
    save = lab.save(client)
    assert "SWARMPY" not in save
    assert _docker_lines(save) == docker_before


# -- 2. the routing mesh in a node namespace ---------------------------------------------------
FAKE_DOCKER = """*filter
:DOCKER-USER - [0:0]
:FORWARD DROP [0:0]
-A FORWARD -j DOCKER-USER
-A DOCKER-USER -j RETURN
COMMIT
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 10.99.{w}.0/24 ! -o docker0 -j MASQUERADE
COMMIT
"""

SYNC = ("import json, sys\n"
        "from worker.network import rules\n"
        "rules.sync_ingress(json.loads(sys.argv[1]), sys.argv[2])\n")


def test_routing_mesh_in_a_node_namespace(lab: Lab):
    y = _subnet()
    z, w = (y + 1) % 256, (y + 2) % 256
    ing, ext = f"10.99.{y}", f"10.99.{z}"
    node, k1, k2, outside = (lab.add_ns(r) for r in ("n", "k1", "k2", "e"))
    bridge = f"sp{lab.tag}ib"
    assert len(bridge) <= 15
    lab.veth(k1, "eth0", node, "vk1")
    lab.veth(k2, "eth0", node, "vk2")
    lab.bridge(node, bridge, ["vk1", "vk2"])
    lab.addr(node, bridge, f"{ing}.1/24")          # the node's address on ingress
    lab.addr(k1, "eth0", f"{ing}.21/24")           # no default route: only SNAT lets them answer
    lab.addr(k2, "eth0", f"{ing}.22/24")
    lab.veth(outside, "eth0", node, "ext0")
    lab.addr(node, "ext0", f"{ext}.1/24")
    lab.addr(outside, "eth0", f"{ext}.2/24")
    lab.sysctl(node, "net.ipv4.ip_forward", "1")    # docker's job on a real node
    lab.ns_sh(node, "iptables-restore", "--noflush", input=FAKE_DOCKER.format(w=w))
    lab.server(k1, "k1", 80)
    lab.server(k2, "k2", 80)
    before = lab.save(node)
    pid = lab.holder(node)

    view = {"id": "ing", "name": "ingress", "subnet": f"{ing}.0/24", "vni": 4096,
            "internal": False, "multicast": False, "ingress": True, "addr": f"{ing}.1",
            "peers": [], "services": [
                {"id": "s1", "name": "web", "aliases": [], "endpoint_mode": "vip",
                 "vip": f"{ing}.5",
                 "ports": [{"protocol": "tcp", "target": 80, "published": 8080, "mode": "ingress"},
                           {"protocol": "tcp", "target": 80, "published": 8090, "mode": "host"}],
                 "tasks": [{"id": "t1", "addr": f"{ing}.21"}, {"id": "t2", "addr": f"{ing}.22"}]},
                {"id": "s2", "name": "idle", "aliases": [], "endpoint_mode": "vip",
                 "vip": f"{ing}.6",
                 "ports": [{"protocol": "tcp", "target": 80, "published": 8081, "mode": "ingress"}],
                 "tasks": []}]}
    # the agent's way: from inside the node's namespace, pid=None; twice, hooks stay single
    lab.python(node, SYNC, json.dumps(view), bridge)
    lab.python(node, SYNC, json.dumps(view), bridge)
    save = lab.save(node)
    for chain in ("PREROUTING", "OUTPUT"):
        assert save.count(f"-A {chain} -m addrtype --dst-type LOCAL -j {rules.INGRESS_CHAIN}\n") == 1
    assert save.count(f"-A DOCKER-USER -j {rules.FORWARD_CHAIN}\n") == 1
    assert save.index(f"-A DOCKER-USER -j {rules.FORWARD_CHAIN}") < save.index("-A DOCKER-USER -j RETURN")
    assert f"-A FORWARD -j {rules.FORWARD_CHAIN}" not in save
    assert lab.sysctl(node, f"net.ipv4.conf.{bridge}.route_localnet") == "1"

    # from outside, to the node's external address: both backends, source = node's ingress addr
    res = lab.connect(outside, f"{ext}.1", 8080, 100)
    assert not res["errors"], res
    assert res["names"].get("k1", 0) >= 25 and res["names"].get("k2", 0) >= 25, res
    assert res["peers"] == {f"{ing}.1": 100}, res
    res = lab.connect(outside, f"{ext}.1", 8081, 3)                  # no backend: refused
    assert res["errors"] == {"ConnectionRefusedError": 3} and res["elapsed"] < 2.0, res
    res = lab.connect(outside, f"{ext}.1", 8090, 1)                  # host-mode: not meshed
    assert "k1" not in res["names"] and "k2" not in res["names"], res

    # from the node itself: its own addresses and loopback (route_localnet + SNAT)
    for host in (f"{ext}.1", f"{ing}.1", "127.0.0.1"):
        res = lab.connect(node, host, 8080, 20)
        assert not res["errors"] and sum(res["names"].values()) == 20, (host, res)
        assert res["peers"] == {f"{ing}.1": 20}, (host, res)
    res = lab.connect(node, "127.0.0.1", 8081, 3)
    assert res["errors"] == {"ConnectionRefusedError": 3} and res["elapsed"] < 2.0, res

    rules.remove_ingress(pid, bridge=bridge)
    assert lab.save(node) == before
    assert lab.sysctl(node, f"net.ipv4.conf.{bridge}.route_localnet") == "0"
    rules.remove_ingress(pid, bridge=bridge)                         # idempotent
    assert lab.save(node) == before
    res = lab.connect(outside, f"{ext}.1", 8080, 1)
    assert not res["names"], res


# -- 3. the mesh's routes over the link (worker/network/routes.py) -------------------------------
ROUTES = ("import json, sys\n"
          "from worker.network import routes\n"
          "print(json.dumps(routes.sync(json.loads(sys.argv[1]))))\n")


def test_mesh_routes_go_only_to_nodes_on_a_link_and_only_ours_are_removed(lab: Lab):
    y = _subnet()
    link, far, ing = f"10.99.{y}", f"10.99.{(y + 1) % 256}", f"10.99.{(y + 2) % 256}"
    node, peer = lab.add_ns("n"), lab.add_ns("p")
    lab.veth(node, "eth0", peer, "eth0")
    lab.addr(node, "eth0", f"{link}.1/24")
    lab.addr(peer, "eth0", f"{link}.2/24")
    lab.sh("ip", "-n", node, "route", "add", f"{far}.0/24", "via", f"{link}.2")    # nodes behind a router
    lab.sh("ip", "-n", node, "route", "add", f"{ing}.99/32", "via", f"{link}.2")   # somebody else's route

    def sync(wanted: dict) -> dict:
        return json.loads(lab.ns_sh(node, sys.executable, "-c", ROUTES, json.dumps(wanted)))

    def ours() -> list[str]:
        return [ln.strip() for ln in lab.ns_sh(node, "ip", "route", "show", "proto", "95").splitlines()]

    # a node on the link gets its route; one behind a router, and this node itself, do not
    wanted = {f"{ing}.2": f"{link}.2", f"{ing}.3": f"{far}.3", f"{ing}.1": f"{link}.1"}
    assert sync(wanted) == {f"{ing}.2": f"{link}.2"}
    assert ours() == [f"{ing}.2 via {link}.2 dev eth0"]
    assert sync(wanted) == {f"{ing}.2": f"{link}.2"} and len(ours()) == 1       # idempotent
    assert sync({}) == {} and ours() == []
    assert f"{ing}.99 via {link}.2 dev eth0" in lab.ns_sh(node, "ip", "route", "show")
