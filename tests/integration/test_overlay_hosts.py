"""Overlay networks across real hosts: three network namespaces, each with its own dockerd
and swarmpy node (1 manager, 2 workers), and containers that talk across them: by
address, by service name (the node's resolver), through VIPs (iptables DNAT in each
container), through the routing mesh (a published port answering on every node) and by
multicast.  The test image carries small static programs (tests/netprogs)."""
from __future__ import annotations

import collections
import re
import sys
import threading
import time

import pytest

from swarmtest import HostCluster, running_tasks, wait_for

pytestmark = pytest.mark.integration

GROUP, MPORT = "239.1.2.3", 5000
HTTPD = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec busybox httpd -f -p 80 -h /www"]
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
QUICK = ["--restart-delay", "0.2s", "--stop-grace-period", "1s"]


@pytest.fixture(scope="module")
def overlay_cluster(test_image):
    from netns import Hosts, netns_available
    from netprogs import build_image
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with Hosts(3, image=test_image) as hosts:
        image = ""
        for h in hosts:
            image = build_image(h.docker())
        before = {h.name: host_state(h) for h in hosts}
        cluster = HostCluster(hosts, image, managers=1)
        try:
            yield cluster, before
        finally:
            cluster.teardown()


def host_state(host) -> dict:
    """What overlays may leave behind on a host: links, engine networks, our iptables chains."""
    links = host.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    rules = host.run(["iptables-save"], capture_output=True, text=True).stdout
    return {"links": sorted(re.findall(r"^\d+: ((?:sp|vx)-[^:@]+)", links, re.M)),
            "networks": sorted(n.name for n in host.docker().networks.list()),
            "swarmpy_rules": sorted(line for line in rules.splitlines() if "SWARMPY" in line),
            "mesh_routes": mesh_routes(host)}


def mesh_routes(host) -> list[str]:
    """The routing mesh's routes over the link to other nodes' ingress addresses (proto 95)."""
    out = host.run(["ip", "route", "show", "proto", "95"], capture_output=True, text=True).stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def containers(node, service: str) -> list:
    return node.docker.containers.list(filters={"label": f"com.swarmpy.service.name={service}"})


def exec_out(container, *argv: str) -> str:
    result = container.exec_run(list(argv))
    return result.output.decode(errors="replace")


def wait_running(node, service: str, count: int, timeout: float = 60) -> list[dict]:
    return wait_for(lambda: (t := running_tasks(node.tasks(service))) and len(t) == count and t,
                    timeout=timeout, message=f"{count} running tasks of {service}")


def addr_on(task: dict) -> str:
    return task["networks"][0]["addr"]


def node_of(cluster: HostCluster, task: dict):
    return next(n for n in cluster.nodes if n.node_id == task["node_id"])


def test_tasks_on_different_hosts_reach_each_other_by_address_and_name(overlay_cluster):
    c, _ = overlay_cluster
    m = c.nodes[0]
    m.ok("network", "create", "-d", "overlay", "appnet")
    m.create("srv", "--mode", "global", "--network", "appnet", *QUICK, command=HTTPD)
    m.create("cli", "--mode", "global", "--network", "appnet", *QUICK, command=SLEEPER)
    servers = wait_running(m, "srv", 3)
    wait_running(m, "cli", 3)
    client = containers(c.nodes[0], "cli")[0]
    for task in servers:
        server_node = node_of(c, task)
        assert "1 packets received" in exec_out(client, "busybox", "ping", "-c1", "-W3", addr_on(task))
        # TCP across hosts: each server answers with its container's hostname.
        answer = exec_out(client, "wget", "-q", "-O", "-", f"http://{addr_on(task)}/").strip()
        assert answer == containers(server_node, "srv")[0].attrs["Config"]["Hostname"]
    # By name: the VIP; tasks.NAME: every task's address.
    vip = m.get("/services/srv")["endpoint"]["virtual_ips"][0]["addr"].split("/")[0]
    assert resolve(client, "srv") == [vip]
    assert sorted(resolve(client, "tasks.srv")) == sorted(addr_on(t) for t in servers)


def vxlan_rx_packets(host) -> int:
    out = host.run(["ip", "-s", "-o", "link", "show", "type", "vxlan"], capture_output=True, text=True).stdout
    # -o puts each device on one line: "... RX: bytes packets ... \    BYTES PACKETS ..."
    return sum(int(m.group(1)) for m in re.finditer(r"RX:[^\\]*\\\s+\d+\s+(\d+)", out))


def test_unicast_between_two_hosts_does_not_reach_the_third(overlay_cluster):
    """Each node knows which node has each address (forwarding entries from the views), so
    traffic between tasks on h1 and h2 is not copied to h3, although h3 is on the network."""
    c, _ = overlay_cluster
    m = c.nodes[0]
    target = next(t for t in wait_running(m, "srv", 3) if node_of(c, t) is c.nodes[1])
    client = containers(c.nodes[0], "cli")[0]
    exec_out(client, "busybox", "ping", "-c1", "-W3", addr_on(target))      # ARP settled
    before = vxlan_rx_packets(c.hosts[2]), vxlan_rx_packets(c.hosts[1])
    exec_out(client, "sh", "-c", f"for i in $(seq 50); do wget -q -O - http://{addr_on(target)}/; done")
    after = vxlan_rx_packets(c.hosts[2]), vxlan_rx_packets(c.hosts[1])
    assert after[1] - before[1] >= 250, (before, after)       # h2 got the traffic: ~8 frames a request
    assert after[0] - before[0] < 10, (before, after)         # h3 did not


def resolve(container, name: str) -> list[str]:
    out = exec_out(container, "busybox", "nslookup", name)
    # busybox prints the server first ("Address: 127.0.0.11:53"), then the answers.
    return [a for a in re.findall(r"^Address:\s*([0-9.]+)\s*$", out, re.M)]


def test_dns_follows_scaling(overlay_cluster):
    c, _ = overlay_cluster
    m = c.nodes[0]
    m.create("rep", "--replicas", "2", "--network", "appnet", *QUICK, command=HTTPD)
    wait_running(m, "rep", 2)
    client = containers(c.nodes[1], "cli")[0]
    wait_for(lambda: len(resolve(client, "tasks.rep")) == 2, timeout=20, message="2 names")
    m.ok("service", "scale", "rep=4")
    tasks = wait_running(m, "rep", 4)
    wait_for(lambda: sorted(resolve(client, "tasks.rep")) == sorted(addr_on(t) for t in tasks),
             timeout=20, message="4 addresses after scaling up")
    m.ok("service", "scale", "rep=1")
    tasks = wait_running(m, "rep", 1)
    wait_for(lambda: resolve(client, "tasks.rep") == [addr_on(tasks[0])], timeout=20,
             message="1 address after scaling down")


def test_connections_to_a_vip_spread_over_every_replica(overlay_cluster):
    c, _ = overlay_cluster
    m = c.nodes[0]
    m.create("spread", "--replicas", "3", "--network", "appnet", *QUICK, command=HTTPD)
    tasks = wait_running(m, "spread", 3)
    client = containers(c.nodes[2], "cli")[0]
    script = "for i in $(seq 90); do wget -q -O - http://spread/; done"
    answers = collections.Counter(exec_out(client, "sh", "-c", script).split())
    hostnames = {containers(node_of(c, t), "spread")[0].attrs["Config"]["Hostname"] for t in tasks}
    assert set(answers) == hostnames, answers
    assert sum(answers.values()) == 90
    assert min(answers.values()) >= 10, answers        # even spread: 30 each expected


def test_scaling_down_under_load_fails_no_request(overlay_cluster):
    """A task leaves every node's rotation before its container is stopped."""
    c, _ = overlay_cluster
    m = c.nodes[0]
    m.create("steady", "--replicas", "3", "--network", "appnet", *QUICK, command=HTTPD)
    wait_running(m, "steady", 3)
    client = containers(c.nodes[0], "cli")[0]
    wait_for(lambda: exec_out(client, "wget", "-q", "-O", "-", "http://steady/").strip(), timeout=20)
    result: list[str] = []
    script = "for i in $(seq 120); do wget -q -O /dev/null http://steady/ && echo ok || echo FAIL; done"
    load = threading.Thread(target=lambda: result.append(exec_out(client, "sh", "-c", script)))
    load.start()
    time.sleep(1)
    m.ok("service", "scale", "steady=1")
    load.join(120)
    answers = collections.Counter(result[0].split())
    assert answers == {"ok": 120}, answers
    wait_running(m, "steady", 1)


def test_the_routing_mesh_answers_on_a_node_without_a_task(overlay_cluster):
    c, _ = overlay_cluster
    m = c.nodes[0]
    m.create("mesh", "--replicas", "1", "--constraint", "node.hostname==h2",
             "--publish", "published=8080,target=80", *QUICK, command=HTTPD)
    task = wait_running(m, "mesh", 1)[0]
    name = containers(node_of(c, task), "mesh")[0].attrs["Config"]["Hostname"]
    client = c.hosts[0]             # a client on h1: every node's address answers, h2 and h3 too
    for host in c.hosts:            # h1 and h3 run no task of it
        assert wait_for(lambda: fetch(client, host.addr, 8080), timeout=20,
                        message=f"{host.name}:8080 answers") == name
    # h3 forwards to h2 over the hosts' link, not the ingress overlay: a route to h2's ingress
    # address via h2, and no VXLAN frame for these requests reaches h2.
    route = wait_for(lambda: mesh_routes(c.hosts[2]), timeout=10)
    assert len(route) == 1 and re.fullmatch(rf"(\S+) via {c.hosts[1].addr} dev eth0", route[0]), route
    h2_addrs = c.hosts[1].run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    assert f" {route[0].split()[0]}/" in h2_addrs           # h2's own address on the ingress network
    before = vxlan_rx_packets(c.hosts[1])
    assert [fetch(client, c.hosts[2].addr, 8080) for _ in range(30)] == [name] * 30
    # over the overlay each request is 5+ frames to h2; the other networks' chatter stays under 1
    assert vxlan_rx_packets(c.hosts[1]) - before < 30
    # From the node itself, on loopback too (over the overlay: a loopback source stays off the link).
    assert fetch(c.hosts[2], "127.0.0.1", 8080) == name
    # Someone else takes the mesh apart on h3 (a link that goes down takes its routes along, a
    # firewall reload the hooks): the agent's resync puts both back, and says so.
    h3 = c.hosts[2]
    h3.run(["ip", "route", "flush", "proto", "95"], check=True)
    h3.run(["iptables", "-w", "-t", "nat", "-D", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL",
            "-j", "SWARMPY-INGRESS"], check=True)
    wait_for(lambda: mesh_routes(h3) == route or None, timeout=30, message="h3's route back")
    assert wait_for(lambda: fetch(client, h3.addr, 8080), timeout=30, message="h3:8080 answers again") == name
    restored = [line for line in c.nodes[2].log_tail(400).splitlines() if "mesh_restored" in line]
    assert any("routes" in line for line in restored) and any("rules" in line for line in restored), restored
    # host mode: only where a task runs.
    m.create("hostmode", "--mode", "global", "--constraint", "node.hostname==h3",
             "--publish", "published=8081,target=80,mode=host", *QUICK, command=HTTPD)
    wait_running(m, "hostmode", 1)
    assert wait_for(lambda: fetch(client, c.hosts[2].addr, 8081), timeout=20)
    assert fetch(client, c.hosts[1].addr, 8081) is None


def test_the_routing_mesh_spreads_over_tasks_on_other_nodes(overlay_cluster):
    """Through a node without a task, connections spread evenly over tasks on two other nodes,
    each forwarded over the link to its node, which serves it with its own task.  The tasks
    are on a second network too, so their default route need not be the ingress bridge."""
    c, _ = overlay_cluster
    m = c.nodes[0]
    m.ok("network", "create", "-d", "overlay", "ameshnet")
    m.create("mesh2", "--mode", "global", "--constraint", "node.hostname!=h3", "--network", "ameshnet",
             "--publish", "published=8082,target=80", *QUICK, command=HTTPD)
    tasks = wait_running(m, "mesh2", 2)
    names = {containers(node_of(c, t), "mesh2")[0].attrs["Config"]["Hostname"] for t in tasks}
    client, via = c.hosts[0], c.hosts[2].addr
    wait_for(lambda: fetch(client, via, 8082), timeout=20, message="h3:8082 answers")
    assert len(wait_for(lambda: len(mesh_routes(c.hosts[2])) == 2 and mesh_routes(c.hosts[2]), timeout=10)) == 2
    # Strict reverse-path filtering on every host (RHEL's default): the tasks' default route is
    # ameshnet's bridge, not the ingress bridge their forwarded connections came in by.
    for t in tasks:
        gateway = exec_out(containers(node_of(c, t), "mesh2")[0], "ip", "route").split()[2]
        assert gateway not in fetch_ingress_addrs(c), gateway
    set_rp_filter(c.hosts, "1")
    answers = collections.Counter(fetch(client, via, 8082) for _ in range(60))
    set_rp_filter(c.hosts, "0")
    assert set(answers) == names, answers
    assert min(answers.values()) >= 15, answers        # 30 each expected
    m.ok("service", "rm", "mesh2")
    wait_for(lambda: not any(containers(n, "mesh2") for n in c.nodes), timeout=60, message="mesh2 gone")
    m.ok("network", "rm", "ameshnet")
    # h1 runs no other mesh task: h3's route to it goes with the service (the one to h2 stays
    # while the test before's service runs there)
    wait_for(lambda: not any(f"via {c.hosts[0].addr} " in r for r in mesh_routes(c.hosts[2])) or None,
             timeout=30, message="h3's route to h1 gone")


def set_rp_filter(hosts, value: str) -> None:
    for h in hosts:
        h.run(["sh", "-c", f"for k in all default eth0; do echo {value} > /proc/sys/net/ipv4/conf/$k/rp_filter; done"],
              check=True)


def fetch_ingress_addrs(c: HostCluster) -> set[str]:
    """Every node's address on the ingress network (the gateways of its bridges)."""
    out = set()
    for h in c.hosts:
        text = h.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
        out |= {m for dev, m in re.findall(r"^\d+: (sp-\S+)\s+inet ([\d.]+)/", text, re.M)
                if dev == ingress_bridge(h)}
    return out


def ingress_bridge(host) -> str:
    names = [n for n in host.docker().networks.list() if n.name == "ingress"]
    return names[0].attrs["Options"].get("com.docker.network.bridge.name", "") if names else ""


FETCH = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    s.sendall(b"GET / HTTP/1.0\\r\\nHost: test\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    sys.stdout.write(data.split(b"\\r\\n\\r\\n", 1)[1].decode())
except OSError as exc:
    sys.exit(f"no answer: {exc}")
"""


def fetch(client_host, addr: str, port: int) -> str | None:
    """An HTTP GET from inside a test host's namespace (the body, stripped; None: no answer).
    The root namespace is no place for clients: this machine may intercept its traffic."""
    done = client_host.run([sys.executable, "-c", FETCH, addr, str(port)], capture_output=True, text=True,
                           timeout=20)
    return done.stdout.strip() if done.returncode == 0 else None


def multicast_round(m, network: str, tag: str, seconds: str = "40") -> None:
    """Receivers on h2 and h3, then a sender on h1 (500 datagrams at 1000/s)."""
    recv = f"mrecv-{tag}"
    m.create(recv, "--mode", "global", "--constraint", "node.hostname!=h1", "--network", network,
             "--restart-condition", "none", *QUICK,
             command=["mcast", "recv", "-i", "3", GROUP, str(MPORT), seconds])
    wait_running(m, recv, 2)
    m.create(f"msend-{tag}", "--mode", "replicated-job", "--constraint", "node.hostname==h1", "--network", network,
             *QUICK, command=["mcast", "send", GROUP, str(MPORT), "500", "1000"])
    wait_for(lambda: all(t["status"]["state"] == 576 for t in m.tasks(f"msend-{tag}")) and m.tasks(f"msend-{tag}"),
             timeout=60, message="the sender finished")


def receiver_summaries(c: HostCluster, service: str, timeout: float = 60) -> list[str]:
    def done():
        lines = []
        for node in c.nodes[1:]:
            found = node.docker.containers.list(all=True, filters={"label": f"com.swarmpy.service.name={service}"})
            if not found or found[0].status == "running":
                return None
            lines.append(found[0].logs().decode().strip().splitlines()[-1])
        return lines
    return wait_for(done, timeout=timeout, message=f"{service} receivers finished")


def test_multicast_crosses_hosts_exactly_once(overlay_cluster):
    c, _ = overlay_cluster
    m = c.nodes[0]
    multicast_round(m, "appnet", "on")
    for line in receiver_summaries(c, "mrecv-on"):
        assert "received=500 unique=500 duplicates=0" in line, line


def test_multicast_false_keeps_group_traffic_on_its_host(overlay_cluster):
    c, _ = overlay_cluster
    m = c.nodes[0]
    m.ok("network", "create", "-d", "overlay", "--opt", "multicast=false", "quiet")
    multicast_round(m, "quiet", "off", seconds="10")
    for line in receiver_summaries(c, "mrecv-off"):
        assert line.startswith("received=0 "), line


def test_removing_services_and_networks_leaves_the_hosts_as_they_were(overlay_cluster):
    c, before = overlay_cluster
    m = c.nodes[0]
    for service in m.service_names():
        m.ok("service", "rm", service)
    wait_for(lambda: not any(containers(n, s) for n in c.nodes
                             for s in ("srv", "cli", "rep", "spread", "mesh", "mesh2", "steady")),
             timeout=60, message="containers gone")
    for network in ("appnet", "quiet"):
        m.ok("network", "rm", network)
    for host in c.hosts:
        wait_for(lambda: host_state(host) == before[host.name], timeout=30,
                 message=f"{host.name} as before: {host_state(host)} vs {before[host.name]}")


def test_bad_network_input_is_refused_whole(overlay_cluster):
    c, _ = overlay_cluster
    m = c.nodes[0]
    m.ok("network", "create", "-d", "overlay", "--subnet", "10.30.0.0/24", "fixed")
    overlap = m.cli("network", "create", "-d", "overlay", "--subnet", "10.30.0.128/25", "other")
    assert overlap.rc != 0 and "overlaps with network fixed" in overlap.err, overlap
    m.create("user", "--replicas", "0", "--network", "fixed")
    in_use = m.cli("network", "rm", "fixed")
    assert in_use.rc != 0 and "in use by service user" in in_use.err, in_use
    unknown = m.cli("service", "create", "--name", "lost", "--network", "nosuch", m.image, "true")
    assert unknown.rc != 0 and "network nosuch not found" in unknown.err, unknown
    assert "lost" not in m.service_names()
    m.ok("service", "rm", "user")
    m.ok("network", "rm", "fixed")
    assert "other" not in m.ok("network", "ls")
