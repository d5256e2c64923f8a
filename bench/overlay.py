"""Overlay networks on three real hosts (issue 5): the routing mesh against a direct port,
TCP throughput over the overlay against the hosts' own link, and multicast delivery.

    python bench/overlay.py [--quick] [--json FILE]

Hosts: tests/netns.py `Hosts(4)`: four network namespaces h1..h4 (10.77.0.11..14) on one
bridge, each with its own dockerd; h1..h3 run a swarmpy cluster (tests/swarmtest.py
`HostCluster`: h1 the manager, h2 and h3 workers), h4 is kept for Docker's own swarm mode
(the reference, at the end).  The test image is tests/netprogs' (busybox applets plus the
static /bin/mcast and /bin/tcpblast), imported into every engine, never pulled.  Every client
runs inside a test host's namespace (`host.run`), never in the root namespace.

1. HTTP requests/s.  One replica of a busybox httpd service pinned to h2 with two published
   ports: `published=30080,target=80` (ingress: the routing mesh, iptables DNAT+SNAT on each
   node) and `published=30081,target=80,mode=host` (the engine's own port binding on h2).
   The client (LOADGEN below: Python threads, one HTTP/1.0 connection per request, as busybox
   httpd closes after each answer) runs in h1's namespace; each measurement is --http-seconds
   with --concurrency workers (8), after a 1 s warm-up, --http-rounds rounds (5) in which the
   order of the targets alternates:
       mesh via h3    10.77.0.13:30080  (h3 has no task: h1 -> h3, DNAT, VXLAN h3 -> h2)
       mesh via h2    10.77.0.12:30080  (the task's node)
       direct h2      10.77.0.12:30081  (no mesh)
   Reported: the median req/s over the rounds and mesh/direct (goal >= 0.9).
2. TCP throughput.  `tcpblast sink 5001` in a task on h2 and a long-running task on h1, both on
   the overlay network `benchnet`; `tcpblast send SINK_TASK_ADDR 5001 S` is exec'd in the h1
   task.  Underlay: the same static tcpblast binary run directly in h2's (sink, port 5002) and
   h1's namespaces over 10.77.0.x.  Alternating, --tcp-rounds rounds (5) of --tcp-seconds (5)
   each, one stream; median Gbit/s and overlay/underlay (goal >= 0.8).  The MTUs are recorded.
   Then an idle task of `benchnet` is started on h3 as well and the same h1 -> h2 stream is
   measured again (--tcp-rounds3 rounds, alternating with the underlay): h3 is then a VXLAN
   peer of h1 and h2 on that network but on no path of the stream.
   Last, --link-rate (10gbit; 'none' skips it): the overlay and underlay rounds again with the
   hosts' link shaped to a NIC's speed (tbf on each host's link end).  The hosts' link is a veth
   pair, as fast as the two shared vCPUs copy, so the unshaped ratio (the goal's measure) is the
   overlay's CPU cost; the shaped one is the share of a real link of that speed it carries.
   Every HTTP and TCP measurement records the VXLAN packets each host received and sent (all
   its VXLAN devices, `ip -s link`; a device counts a frame once per peer it goes to): a host
   on no path of the traffic should see none.
3. Multicast.  Per rate: a global service `mcast recv -i 3 GROUP PORT S` (constraint
   node.hostname!=h1, so h2 and h3, --restart-condition none) on `benchnet`, waited for until
   both logged "joined"; then a replicated-job pinned to h1, `mcast send GROUP PORT COUNT RATE`.
   Per receiver: delivered datagrams/s = received / the sender's own seconds, loss % =
   1 - unique/sent, duplicates.  Receiver summaries are read from the container logs through
   each host's engine.  Both services are removed after each rate.
4. Docker reference.  `docker swarm init` on h4 (the docker CLI inside h4's namespace, against
   h4's engine only, tests/dockerswarm.py), then `docker service create --detach
   --publish published=30090,target=80` of the same httpd (the image by id: no pull), and a
   GET from h1 to h4:30090 (and from h4 to itself): the outcome is recorded as observed (this
   kernel has no IPVS, which Docker's ingress needs); if it answers it is measured like 1.

--quick: one short round of each (and two multicast rates) for a smoke check.  Other test
runs share this machine: before the start, and before any measurement while a pytest process
runs, the script waits until none has been seen for 15 s (--quiet-wait); an HTTP or TCP
measurement during which one was seen is taken again (up to --attempts), the discarded ones
kept in the JSON (`discarded`); every measurement records the whole machine's CPU use.
Everything is torn down on exit, error, Ctrl-C or SIGTERM (the harness: containers, engines,
namespaces, links, iptables rules).
Exit status 2 if a goal is missed, 1 if a measurement failed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import common  # noqa: F401  (puts the repository on sys.path)
from clusters import Cleanup, default_json, log, system_busy_s
from common import REPO, machine, median, table, write_json
from stack_deploy import add_quiet_options, others_testing, wait_quiet

sys.path.insert(0, os.path.join(REPO, "tests"))
os.environ["PYTHONPATH"] = REPO + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")

import dockerswarm  # noqa: E402
from netns import Hosts, netns_available  # noqa: E402
from netprogs import build, build_image  # noqa: E402
from swarmtest import HostCluster  # noqa: E402

HTTPD = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec busybox httpd -f -p 80 -h /www"]
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
QUICK_FLAGS = ["--restart-delay", "0.2s", "--stop-grace-period", "1s"]
MESH_PORT, DIRECT_PORT, DOCKER_PORT = 30080, 30081, 30090
SINK_PORT, UNDERLAY_SINK_PORT = 5001, 5002
OVERLAY3 = "overlay, net also on h3"
GROUP, MPORT = "239.1.2.3", 5000
RUNNING, COMPLETE = 512, 576
GOAL_MESH, GOAL_TCP = 0.9, 0.8
DOCKER_WAIT_S = 20.0
LABEL_SERVICE = "com.swarmpy.service.name"

# The HTTP load generator, run with `python -c` inside h1's namespace:
#   HOST PORT SECONDS CONCURRENCY -> one JSON line.  Threads with blocking sockets: on this
# machine they did about 1.7x the requests/s of asyncio streams against the same httpd.
LOADGEN = r"""
import json, socket, sys, threading, time
host, port, seconds, conc = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
REQ = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"
lock = threading.Lock()
st = {"ok": 0, "bad": 0, "errors": 0, "error_kinds": {}, "lat": []}
def worker(deadline):
    ok = bad = err = 0; lat = []; kinds = {}
    while True:
        t0 = time.monotonic()
        if t0 >= deadline:
            break
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.sendall(REQ)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            if data[:12] in (b"HTTP/1.0 200", b"HTTP/1.1 200"):
                ok += 1; lat.append(time.monotonic() - t0)
            else:
                bad += 1
        except OSError as exc:
            err += 1; k = type(exc).__name__ + ": " + str(exc)[:80]; kinds[k] = kinds.get(k, 0) + 1
    with lock:
        st["ok"] += ok; st["bad"] += bad; st["errors"] += err; st["lat"] += lat
        for k, v in kinds.items():
            st["error_kinds"][k] = st["error_kinds"].get(k, 0) + v
t0 = time.monotonic()
threads = [threading.Thread(target=worker, args=(t0 + seconds,)) for _ in range(conc)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.monotonic() - t0
lat = sorted(st.pop("lat"))
pick = lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3, 2) if lat else None
st.update(seconds=round(elapsed, 3), req_per_s=round(st["ok"] / elapsed, 1), p50_ms=pick(0.5), p99_ms=pick(0.99))
print(json.dumps(st))
"""

# One GET with a timeout, inside a namespace: prints the body, or exits 1 with the error.
FETCH = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    s.settimeout(float(sys.argv[3]))
    s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip())
except OSError as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")
"""


class BenchError(RuntimeError):
    pass


def wait(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:     # not yet
            last_exc = exc
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}"
                             + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def fetch(host, addr: str, port: int, timeout: float = 3.0) -> tuple[bool, str, float]:
    """(answered, body or error, seconds) of one GET from inside `host`'s namespace."""
    t0 = time.monotonic()
    done = host.run([sys.executable, "-c", FETCH, addr, str(port), str(timeout)], capture_output=True,
                    text=True, timeout=timeout * 3 + 15)
    took = time.monotonic() - t0
    if done.returncode == 0:
        return True, done.stdout.strip(), took
    return False, (done.stderr.strip().splitlines() or ["?"])[-1], took


def loadgen(host, addr: str, port: int, seconds: float, concurrency: int) -> dict:
    """One measurement; `client_cpu_pct`: the load generator's own CPU time (user + system, its
    syscalls included) over its wall time, in % of one vCPU."""
    before, t0 = os.times(), time.monotonic()
    done = host.run([sys.executable, "-c", LOADGEN, addr, str(port), str(seconds), str(concurrency)],
                    capture_output=True, text=True, timeout=seconds + 60)
    after, wall = os.times(), time.monotonic() - t0
    if done.returncode != 0:
        raise BenchError(f"load generator failed: {done.stderr.strip()[-500:]}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    res["client_cpu_pct"] = round(100 * cpu / wall, 1)
    return res


class Meter:
    """Whole-machine CPU use over a measurement (both vCPUs: client, server, kernel, engines)."""

    def __init__(self) -> None:
        self.t0, self.b0 = time.monotonic(), system_busy_s()
        self.pytest_before = bool(others_testing())

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        busy = system_busy_s() - self.b0
        return {"cpu_busy_s": round(busy, 2), "cpu_busy_pct": round(100 * busy / (wall * (os.cpu_count() or 1)), 1),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "pytest_seen": self.pytest_before or bool(others_testing())}


def measure(args, what: str, fn, discarded: list) -> dict:
    """fn() -> result with Meter fields; when another test run (pytest) is going on, wait for it
    to end first (up to --quiet-wait), and measure again (up to --attempts) when one was seen
    during the measurement; the discarded results are kept."""
    for attempt in range(1, args.attempts + 1):
        waited = wait_quiet(args.quiet_wait) if args.quiet_wait and others_testing() else 0.0
        res = fn()
        res.update(attempt=attempt, waited_for_quiet_s=round(waited, 1))
        if res["pytest_seen"] and attempt < args.attempts:
            discarded.append(dict(res, what=what))
            log(f"  {what}: another test run shared the machine: measuring again")
            continue
        return res
    return res


# -- the swarmpy side --------------------------------------------------------------------------------
def tasks(m, service: str) -> list[dict]:
    return m.tasks(service)


def wait_running(m, service: str, count: int, timeout: float = 90) -> list[dict]:
    def ready():
        run = [t for t in tasks(m, service) if t["desired_state"] == RUNNING and t["status"]["state"] == RUNNING]
        return run if len(run) == count else None
    return wait(ready, timeout, f"{count} running tasks of {service}")


def create(m, name: str, *flags: str, command: list[str]) -> None:
    m.ok("service", "create", "-d", "--name", name, *flags, *QUICK_FLAGS, m.image, *command, timeout=90)


def containers_of(host, service: str, all: bool = False) -> list:
    return host.docker().containers.list(all=all, filters={"label": f"{LABEL_SERVICE}={service}"})


def remove_services(m, hosts, names: list[str], timeout: float = 60) -> None:
    for name in names:
        m.cli("service", "rm", name)
    wait(lambda: not any(containers_of(h, n, all=True) for h in hosts for n in names), timeout,
         f"the containers of {', '.join(names)} to go")


def vxlan_packets(hosts) -> dict[str, dict[str, list[int]]]:
    """{host: {vxlan device: [rx packets, tx packets]}}.  A VXLAN device counts a frame once per
    peer it is sent to; a node that is on no path of the traffic should receive nothing."""
    out = {}
    for h in hosts:
        done = h.run(["ip", "-s", "-j", "link", "show", "type", "vxlan"], capture_output=True, text=True)
        try:
            links = json.loads(done.stdout or "[]")
        except ValueError:
            links = []
        out[h.name] = {ln["ifname"]: [ln["stats64"]["rx"]["packets"], ln["stats64"]["tx"]["packets"]]
                       for ln in links if "stats64" in ln}
    return out


def vxlan_delta(before: dict, after: dict) -> dict[str, list[int]]:
    """Per host: [rx, tx] packets over all its VXLAN devices between two vxlan_packets()."""
    out = {}
    for host, devs in after.items():
        rx = sum(v[0] - before.get(host, {}).get(d, [0, 0])[0] for d, v in devs.items())
        tx = sum(v[1] - before.get(host, {}).get(d, [0, 0])[1] for d, v in devs.items())
        out[host] = [rx, tx]
    return out


def mtu(host, container=None) -> int | None:
    """eth0's MTU in a host's namespace or in a container."""
    if container is None:
        out = host.run(["ip", "-o", "link", "show", "eth0"], capture_output=True, text=True).stdout
    else:
        out = container.exec_run(["ip", "-o", "link", "show", "eth0"]).output.decode(errors="replace")
    m = re.search(r"\bmtu (\d+)", out)
    return int(m.group(1)) if m else None


def http_part(c, args) -> dict:
    m, (h1, h2, h3) = c.nodes[0], c.hosts.hosts
    log("HTTP: creating the httpd service on h2 (mesh port 30080, host-mode port 30081)")
    create(m, "web", "--replicas", "1", "--constraint", "node.hostname==h2",
           "--publish", f"published={MESH_PORT},target=80",
           "--publish", f"published={DIRECT_PORT},target=80,mode=host", command=HTTPD)
    task = wait_running(m, "web", 1)[0]
    name = containers_of(h2, "web")[0].attrs["Config"]["Hostname"]
    targets = [("mesh via h3", h3.addr, MESH_PORT), ("mesh via h2", h2.addr, MESH_PORT),
               ("direct h2:30081", h2.addr, DIRECT_PORT)]
    for label, addr, port in targets:
        wait(lambda: fetch(h1, addr, port)[1] == name, 30, f"{label} ({addr}:{port}) to answer")
    log(f"HTTP: all three answer with the task's hostname {name}; measuring")
    runs: dict[str, list[dict]] = {t[0]: [] for t in targets}
    for r in range(1, args.http_rounds + 1):
        order = targets if r % 2 else list(reversed(targets))
        for label, addr, port in order:
            def one(addr=addr, port=port) -> dict:
                loadgen(h1, addr, port, 1.0, args.concurrency)          # warm-up, not kept
                vx0, meter = vxlan_packets(c.hosts.hosts), Meter()
                res = loadgen(h1, addr, port, args.http_seconds, args.concurrency)
                res.update(meter.stop())
                res["vxlan_rx_tx_packets"] = vxlan_delta(vx0, vxlan_packets(c.hosts.hosts))
                return res
            res = measure(args, f"round {r} {label}", one, args.discarded)
            res["round"] = r
            res["cpu_ms_per_req"] = round(1000 * res["cpu_busy_s"] / res["ok"], 3) if res["ok"] else None
            runs[label].append(res)
            vx = res["vxlan_rx_tx_packets"]
            log(f"  round {r} {label:16s} {res['req_per_s']:8.1f} req/s  p50 {res['p50_ms']} ms  p99 "
                f"{res['p99_ms']} ms  errors {res['errors']}  CPU {res['cpu_busy_pct']}% (client "
                f"{res['client_cpu_pct']}% of a vCPU)  VXLAN rx/tx h1 {vx['h1']} h2 {vx['h2']} h3 {vx['h3']}"
                f"{'  (pytest seen)' if res['pytest_seen'] else ''}")
    med = {k: median([x["req_per_s"] for x in v]) for k, v in runs.items()}
    direct = med["direct h2:30081"]
    ratios = {k: (med[k] / direct if direct else None) for k in ("mesh via h3", "mesh via h2")}
    remove_services(m, c.hosts.hosts, ["web"])
    return {"task": {"id": task["id"], "hostname": name}, "runs": runs, "median_req_per_s": med,
            "ratio_mesh_to_direct": ratios, "goal": GOAL_MESH,
            "goal_met": all(v is not None and v >= GOAL_MESH for v in ratios.values())}


def tcp_part(c, args, tcpblast: str) -> dict:
    m, (h1, h2, _) = c.nodes[0], c.hosts.hosts
    log("TCP: overlay benchnet, sink task on h2, client task on h1")
    create(m, "sink", "--replicas", "1", "--constraint", "node.hostname==h2", "--network", "benchnet",
           command=["tcpblast", "sink", str(SINK_PORT)])
    create(m, "client", "--replicas", "1", "--constraint", "node.hostname==h1", "--network", "benchnet",
           command=SLEEPER)
    sink_task = wait_running(m, "sink", 1)[0]
    wait_running(m, "client", 1)
    sink_addr = sink_task["networks"][0]["addr"].split("/")[0]
    client = containers_of(h1, "client")[0]
    mtus = {"overlay_container_eth0": mtu(None, client), "underlay_host_eth0": mtu(h1)}
    vx = h1.run(["ip", "-d", "-o", "link", "show", "type", "vxlan"], capture_output=True, text=True).stdout
    mtus["vxlan_devices_h1"] = re.findall(r"^\d+: (\S+?):.*?\bmtu (\d+)", vx, re.M)
    log(f"TCP: sink task at {sink_addr}; MTUs {mtus}")
    sink = h2.popen([tcpblast, "sink", str(UNDERLAY_SINK_PORT)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    secs = str(args.tcp_seconds)

    def overlay() -> dict:
        res = client.exec_run(["tcpblast", "send", sink_addr, str(SINK_PORT), secs])
        return parse_blast(res.exit_code, res.output.decode(errors="replace"))

    def underlay() -> dict:
        done = h1.run([tcpblast, "send", h2.addr, str(UNDERLAY_SINK_PORT), secs], capture_output=True,
                      text=True, timeout=args.tcp_seconds + 60)
        return parse_blast(done.returncode, done.stdout + done.stderr)

    shaped = {"overlay": f"overlay, link {args.link_rate}", "underlay": f"underlay, link {args.link_rate}"}
    runs: dict[str, list[dict]] = {"overlay": [], "underlay": [], OVERLAY3: []}
    if args.link_rate:
        runs.update({shaped["overlay"]: [], shaped["underlay"]: []})

    def rounds(labels: list[tuple], count: int) -> None:
        for r in range(1, count + 1):
            for label, fn in (labels if r % 2 else labels[::-1]):
                def one(fn=fn) -> dict:
                    vx0, meter = vxlan_packets(c.hosts.hosts), Meter()
                    res = fn()
                    res.update(meter.stop())
                    res["vxlan_rx_tx_packets"] = vxlan_delta(vx0, vxlan_packets(c.hosts.hosts))
                    return res
                res = measure(args, f"round {r} {label}", one, args.discarded)
                res["round"] = r
                runs[label].append(res)
                vx = res["vxlan_rx_tx_packets"]
                log(f"  round {r} {label:24s} {res.get('gbit_per_s')} Gbit/s  CPU {res['cpu_busy_pct']}%  VXLAN "
                    f"rx/tx h1 {vx['h1']} h2 {vx['h2']} h3 {vx['h3']}"
                    f"{'  (pytest seen)' if res['pytest_seen'] else ''}{'  ' + res['error'] if res.get('error') else ''}")

    try:
        rounds([("overlay", overlay), ("underlay", underlay)], args.tcp_rounds)
        # The same h1 -> h2 stream once the network also has a task on h3 (idle): every node on a
        # network is a VXLAN peer of the others; frames h3 is not meant to get show in its counters.
        log("TCP: an idle task of benchnet on h3 too")
        create(m, "idle3", "--replicas", "1", "--constraint", "node.hostname==h3", "--network", "benchnet",
               command=SLEEPER)
        wait_running(m, "idle3", 1)
        time.sleep(2)                   # the other nodes' views list h3 as a peer
        rounds([(OVERLAY3, overlay), ("underlay", underlay)], args.tcp_rounds3)
        if args.link_rate:
            log(f"TCP: the hosts' link shaped to {args.link_rate} (tbf on each host's link end)")
            with shaped_link(c.hosts.hosts, args.link_rate):
                rounds([(shaped["overlay"], overlay), (shaped["underlay"], underlay)], args.tcp_rounds)
    finally:
        sink.terminate()
        try:
            sink.wait(10)
        except subprocess.TimeoutExpired:
            sink.kill()
    med = {k: median([x["gbit_per_s"] for x in v if x.get("gbit_per_s") is not None]) for k, v in runs.items()}
    ratio = med["overlay"] / med["underlay"] if med["overlay"] and med["underlay"] else None
    ratio3 = med[OVERLAY3] / med["underlay"] if med[OVERLAY3] and med["underlay"] else None
    ratio_shaped = None
    if args.link_rate and med[shaped["overlay"]] and med[shaped["underlay"]]:
        ratio_shaped = med[shaped["overlay"]] / med[shaped["underlay"]]
    remove_services(m, c.hosts.hosts, ["sink", "client", "idle3"])
    return {"sink_addr": sink_addr, "mtu": mtus, "runs": runs, "median_gbit_per_s": med,
            "ratio_overlay_to_underlay": ratio, "ratio_overlay3_to_underlay": ratio3, "goal": GOAL_TCP,
            "goal_met": ratio is not None and ratio >= GOAL_TCP,
            "link_rate": args.link_rate, "ratio_overlay_to_underlay_shaped_link": ratio_shaped}


@contextlib.contextmanager
def shaped_link(hosts, rate: str):
    """The hosts' link at a NIC's speed: a token bucket on the root end of every host's veth, the
    way into that host.  Unshaped, the link is a veth pair, as fast as the CPUs copy, so the
    overlay/underlay ratio there measures only the overlay's CPU cost per byte; shaped, it
    shows what share of a real link of that speed the overlay carries.  tbf counts every
    segment's headers of a GSO frame (qdisc_pkt_len_init), the VXLAN headers included; the
    burst holds a whole 64 KB GSO frame, so tbf never segments one."""
    for h in hosts:
        subprocess.run(["tc", "qdisc", "replace", "dev", h.veth, "root", "tbf", "rate", rate,
                        "burst", "2mb", "latency", "20ms"], check=True, capture_output=True, timeout=30)
    try:
        yield
    finally:
        for h in hosts:
            subprocess.run(["tc", "qdisc", "del", "dev", h.veth, "root"], capture_output=True, timeout=30)


def parse_blast(rc: int, out: str) -> dict:
    m = re.search(r"bytes=(\d+) seconds=([0-9.]+) gbit_per_s=([0-9.]+)", out)
    if rc != 0 or not m:
        return {"rc": rc, "error": out.strip()[-300:], "gbit_per_s": None}
    return {"rc": rc, "bytes": int(m.group(1)), "seconds": float(m.group(2)), "gbit_per_s": float(m.group(3))}


def mcast_part(c, args) -> dict:
    m, (h1, h2, h3) = c.nodes[0], c.hosts.hosts
    results = []
    for i, rate in enumerate(args.rates):
        count = rate * 3 if rate else 20000
        recv, send = f"mrecv{i}", f"msend{i}"
        limit = (count / rate if rate else 10) + 30
        log(f"multicast: rate {rate or 'max'}/s, {count} datagrams: receivers on h2 and h3")
        create(m, recv, "--mode", "global", "--constraint", "node.hostname!=h1", "--network", "benchnet",
               "--restart-condition", "none",
               command=["mcast", "recv", "-i", "3", GROUP, str(MPORT), str(int(limit))])
        wait_running(m, recv, 2)
        for h in (h2, h3):
            wait(lambda: "mcast: joined" in containers_of(h, recv)[0].logs(stdout=False, stderr=True).decode(),
                 30, f"the receiver on {h.name} to join")
        meter = Meter()
        create(m, send, "--mode", "replicated-job", "--constraint", "node.hostname==h1", "--network", "benchnet",
               command=["mcast", "send", GROUP, str(MPORT), str(count), str(rate)])
        wait(lambda: (ts := tasks(m, send)) and all(t["status"]["state"] >= COMPLETE for t in ts), limit + 60,
             f"the sender {send} to finish")
        sender_state = tasks(m, send)[0]["status"]
        sender_out = containers_of(h1, send, all=True)[0].logs().decode(errors="replace").strip()
        s = re.search(r"sent=(\d+) errors=(\d+) seconds=([0-9.]+)", sender_out)
        if not s:
            raise BenchError(f"sender printed no summary: {sender_out!r} (task status {sender_state})")
        sent, send_errors, send_s = int(s.group(1)), int(s.group(2)), float(s.group(3))
        receivers = {}
        for h in (h2, h3):
            def summary(h=h):
                found = containers_of(h, recv, all=True)
                if not found or found[0].status == "running":
                    return None
                return found[0].logs(stdout=True, stderr=False).decode().strip().splitlines()[-1]
            line = wait(summary, limit + 30, f"the receiver on {h.name} to finish")
            r = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(-?\d+)", line))
            r.update(line=line, delivered_per_s=round(r.get("received", 0) / send_s, 1) if send_s else None,
                     loss_pct=round(100 * (1 - r.get("unique", 0) / sent), 2) if sent else None)
            receivers[h.name] = r
        res = {"rate": rate, "count": count, "sent": sent, "send_errors": send_errors, "send_seconds": send_s,
               "offered_per_s": round(sent / send_s, 1) if send_s else None, "receivers": receivers,
               **meter.stop()}
        results.append(res)
        log(f"  rate {rate or 'max':>6}: sent {sent} in {send_s:.3f} s ({res['offered_per_s']}/s); "
            + "; ".join(f"{n}: received {r.get('received')} unique {r.get('unique')} dup {r.get('duplicates')} "
                        f"({r['delivered_per_s']}/s, loss {r['loss_pct']}%)" for n, r in receivers.items()))
        remove_services(m, c.hosts.hosts, [recv, send])
    return {"group": GROUP, "port": MPORT, "payload_bytes": 64, "rounds": results}


# -- Docker's own swarm mode on h4 ----------------------------------------------------------------------
def docker_part(hosts, image: str, args) -> dict:
    h1, h4 = hosts[0], hosts[3]
    out: dict = {"host": h4.name}
    cli = dockerswarm.find_cli()
    if cli is None:
        return {"skipped": "no docker CLI with `stack deploy --resolve-image`"}
    with tempfile.TemporaryDirectory(prefix="swarmpy-bench-ov-cli-") as cfg:
        swarm = dockerswarm.DockerSwarm(h4, cli, cfg)
        out["no_route_out"] = bool(swarm.no_route_out())
        out["version"] = swarm.version()
        log(f"Docker reference on h4: {out['version']}; docker swarm init")
        try:
            swarm.init()
        except RuntimeError as exc:
            out["swarm_init"] = f"failed: {exc}"
            return out
        out["swarm_init"] = "ok"
        try:
            image_id = h4.docker().images.get(image).id
            res = swarm.docker("service", "create", "--detach", "--no-resolve-image", "--name", "dref",
                               "--publish", f"published={DOCKER_PORT},target=80", image_id, *HTTPD, check=False,
                               timeout=90)
            out["service_create"] = {"rc": res.returncode, "output": (res.stdout + res.stderr).strip()[-500:]}
            fmt = "{{.Name}}\t{{.CurrentState}}\t{{.Error}}"

            def state():
                ps = swarm.docker("service", "ps", "dref", "--no-trunc", "--format", fmt, check=False).stdout
                return ps.strip()
            deadline = time.monotonic() + 45
            ps = state()
            while time.monotonic() < deadline and not re.search(r"\tRunning ", ps):
                time.sleep(1)
                ps = state()
            out["service_ps"] = ps.splitlines()[:6]
            answers = {}
            for who, host, addr in (("h1 -> h4:30090", h1, h4.addr), ("h4 -> h4:30090", h4, h4.addr),
                                    ("h4 -> 127.0.0.1:30090", h4, "127.0.0.1")):
                # The first tried for up to DOCKER_WAIT_S after the task runs (the engine
                # programs its ingress a moment after the container starts), the others once.
                t0, tries = time.monotonic(), 0
                while True:
                    ok, text, took = fetch(host, addr, DOCKER_PORT, timeout=5.0)
                    tries += 1
                    if ok or answers or time.monotonic() - t0 > DOCKER_WAIT_S:
                        break
                    time.sleep(1)
                answers[who] = {"answered": ok, "result": text[:300], "tries": tries,
                                "last_try_s": round(took, 2), "tried_for_s": round(time.monotonic() - t0, 1)}
                log(f"  Docker ingress {who}: {'answered ' + repr(text) if ok else 'NO ANSWER: ' + text} "
                    f"({tries} tries over {answers[who]['tried_for_s']} s)")
            out["fetch"] = answers
            containers = h4.docker().containers.list(all=True)
            out["containers"] = [f"{x.name} {x.status}" for x in containers][:6]
            log_lines = h4.engine_log.read_text(errors="replace").splitlines()
            nat = h4.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
            out["nat_rules_ingress"] = [ln for ln in nat.splitlines() if "INGRESS" in ln or str(DOCKER_PORT) in ln]
            out["engine_log_ipvs"] = [ln[-400:] for ln in log_lines if re.search(r"ipvs|IPVS|ingress", ln)][-12:]
            if answers["h1 -> h4:30090"]["answered"]:
                runs = []
                for r in range(1, args.http_rounds + 1):
                    loadgen(h1, h4.addr, DOCKER_PORT, 1.0, args.concurrency)
                    meter = Meter()
                    res = loadgen(h1, h4.addr, DOCKER_PORT, args.http_seconds, args.concurrency)
                    res.update(meter.stop(), round=r)
                    runs.append(res)
                    log(f"  round {r} docker ingress {res['req_per_s']} req/s")
                out["runs"] = runs
                out["median_req_per_s"] = median([x["req_per_s"] for x in runs])
        finally:
            swarm.docker("service", "rm", "dref", check=False)
            swarm.leave()
    return out


# -- main -------------------------------------------------------------------------------------------------
def fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(res: dict, args) -> int:
    status = 0
    http = res.get("http")
    if http:
        print(f"\n1. HTTP through the routing mesh vs direct: client on h1, {args.concurrency} workers, "
              f"{args.http_seconds:g} s x {args.http_rounds} rounds, one connection per request")
        rows = []
        for label, runs in http["runs"].items():
            ratio = http["ratio_mesh_to_direct"].get(label)
            rows.append([label, " ".join(fmt(x["req_per_s"], 0) for x in runs), fmt(http["median_req_per_s"][label], 0),
                         fmt(ratio, 2) if ratio is not None else "1.00 (base)",
                         fmt(median([x["p50_ms"] for x in runs if x["p50_ms"]]), 2),
                         fmt(median([x["cpu_busy_pct"] for x in runs]), 0),
                         fmt(median([x["client_cpu_pct"] for x in runs]), 0),
                         fmt(median([x["cpu_ms_per_req"] for x in runs if x["cpu_ms_per_req"]]), 2),
                         int(median([x["vxlan_rx_tx_packets"]["h1"][0] / max(1, x["ok"]) for x in runs])),
                         sum(x["errors"] + x["bad"] for x in runs)])
        dref = res.get("docker", {})
        if dref.get("median_req_per_s"):
            rows.append(["docker swarm ingress h4", " ".join(fmt(x["req_per_s"], 0) for x in dref["runs"]),
                         fmt(dref["median_req_per_s"], 0), "-", "-", "-", "-", "-", "-", "-"])
        elif dref.get("fetch"):
            f = dref["fetch"]["h1 -> h4:30090"]
            rows.append(["docker swarm ingress h4", "no answer: " + f["result"][:40], "-", "-", "-", "-", "-", "-", "-", "-"])
        print(table(["target", "req/s per round", "median", "mesh/direct", "p50 ms", "CPU %", "client %",
                     "CPU ms/req", "h1 VXLAN rx/req", "errors"], rows))
        print("(h1 VXLAN rx/req: VXLAN frames h1, the client, received per request; h1 is on no overlay path)")
        ok = http["goal_met"]
        print(f"goal mesh/direct >= {GOAL_MESH}: {'met' if ok else 'NOT met'}")
        status = status or (0 if ok else 2)
    tcp = res.get("tcp")
    if tcp:
        print(f"\n2. TCP throughput h1 -> h2, one stream, {args.tcp_seconds:g} s x {args.tcp_rounds} rounds "
              f"(MTU overlay {tcp['mtu']['overlay_container_eth0']}, underlay {tcp['mtu']['underlay_host_eth0']})")
        rows = [[k, " ".join(fmt(x.get("gbit_per_s"), 2) for x in v), fmt(tcp["median_gbit_per_s"][k], 2)]
                for k, v in tcp["runs"].items()]
        print(table(["path", "Gbit/s per round", "median"], rows))
        ratio = tcp["ratio_overlay_to_underlay"]
        print(f"overlay/underlay = {fmt(ratio, 2)} (goal >= {GOAL_TCP}: {'met' if tcp['goal_met'] else 'NOT met'})")
        print(f"overlay with the network also on h3 / underlay = {fmt(tcp['ratio_overlay3_to_underlay'], 2)}")
        if tcp.get("link_rate"):
            print(f"on the link shaped to {tcp['link_rate']}: overlay/underlay = "
                  f"{fmt(tcp['ratio_overlay_to_underlay_shaped_link'], 2)} (not the goal's measure: "
                  "the goal is judged on the unshaped link)")
        status = status or (0 if tcp["goal_met"] else 2)
    mc = res.get("multicast")
    if mc:
        print(f"\n3. Multicast {GROUP}:{MPORT}, 64-byte datagrams, sender on h1, receivers on h2 and h3")
        rows = []
        for r in mc["rounds"]:
            for name, x in r["receivers"].items():
                rows.append([r["rate"] or "max", r["sent"], fmt(r["send_seconds"], 3), fmt(r["offered_per_s"], 0), name,
                             x.get("received"), x.get("unique"), x.get("duplicates"), fmt(x["delivered_per_s"], 0),
                             fmt(x["loss_pct"], 2)])
        print(table(["rate/s", "sent", "send s", "offered/s", "recv", "received", "unique", "dup", "delivered/s",
                     "loss %"], rows))
    d = res.get("docker")
    if d:
        print(f"\n4. Docker reference on h4 ({d.get('version', '?')}): swarm init {d.get('swarm_init')}")
        for line in d.get("service_ps", []):
            print(f"   service ps: {line}")
        for who, f in (d.get("fetch") or {}).items():
            print(f"   {who}: {'answered' if f['answered'] else 'no answer'}: {f['result'][:120]} "
                  f"({f['tries']} tries over {f['tried_for_s']} s)")
    return status


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round of each, two multicast rates")
    ap.add_argument("--http-rounds", type=int)
    ap.add_argument("--http-seconds", type=float)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tcp-rounds", type=int)
    ap.add_argument("--tcp-seconds", type=float)
    ap.add_argument("--tcp-rounds3", type=int, help="rounds with the network also on h3")
    ap.add_argument("--link-rate", default="10gbit",
                    help="after the unshaped rounds, the same rounds with the hosts' link shaped to this "
                         "tc rate (a NIC's speed); 'none' to skip")
    ap.add_argument("--rates", help="multicast rates per second, comma-separated, 0 = as fast as possible")
    ap.add_argument("--no-docker", action="store_true", help="skip Docker's swarm reference")
    add_quiet_options(ap)
    ap.add_argument("--json", help="results file (default bench/results/overlay-DATE.json)")
    args = ap.parse_args()
    q = args.quick
    args.http_rounds = args.http_rounds or (1 if q else 5)
    args.http_seconds = args.http_seconds or (3.0 if q else 10.0)
    args.tcp_rounds = args.tcp_rounds or (1 if q else 5)
    args.tcp_seconds = args.tcp_seconds or (3.0 if q else 5.0)
    args.tcp_rounds3 = args.tcp_rounds3 or (1 if q else 3)
    args.link_rate = None if args.link_rate in ("", "none") else args.link_rate
    args.rates = [int(x) for x in (args.rates or ("1000,0" if q else "1000,5000,20000,0")).split(",")]
    args.json = args.json or default_json("overlay" + ("-quick" if q else ""))
    args.discarded = []
    reason = netns_available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1

    info = machine()
    waited = wait_quiet(args.quiet_wait) if args.quiet_wait else 0.0
    info.update(waited_for_quiet_s=round(waited, 1), pytest_at_start=others_testing())
    paths = build()
    results: dict = {}
    status = 0
    t_start = time.monotonic()
    with Cleanup() as cleanup:
        log("starting 4 hosts (h1..h3: swarmpy, h4: Docker's swarm reference)")
        hosts = Hosts(4)
        cleanup.add("hosts", hosts.close)
        image = ""
        for h in hosts:
            image = build_image(h.docker())
        info["engine"] = hosts[0].docker().version().get("Version")
        info["timings_hosts_up_s"] = round(hosts.timings.get("up", 0), 1)
        log(f"hosts up in {info['timings_hosts_up_s']} s (engine {info['engine']}); starting the swarmpy cluster")
        c = HostCluster(SimpleNamespace(hosts=hosts.hosts[:3]), image, managers=1)
        cleanup.add("swarmpy cluster", c.teardown)
        m = c.nodes[0]
        m.ok("network", "create", "-d", "overlay", "benchnet")
        info["benchnet"] = {k: v for k, v in m.get("/networks/benchnet").items() if k in ("subnet", "vni", "spec")}
        parts = [("http", lambda: http_part(c, args)), ("tcp", lambda: tcp_part(c, args, paths["tcpblast"])),
                 ("multicast", lambda: mcast_part(c, args))]
        for key, fn in parts:
            try:
                results[key] = fn()
            except (BenchError, AssertionError, subprocess.SubprocessError) as exc:
                log(f"{key}: FAILED: {exc}")
                results[key + "_error"] = str(exc)
                status = 1
        log("tearing down the swarmpy cluster")
        cleanup.steps.pop()
        c.teardown()
        if not args.no_docker:
            try:
                results["docker"] = docker_part(hosts, image, args)
            except (BenchError, RuntimeError, subprocess.SubprocessError) as exc:
                log(f"docker reference: FAILED: {exc}")
                results["docker_error"] = str(exc)
        log("tearing down the hosts")
    info["total_s"] = round(time.monotonic() - t_start, 1)
    info["pytest_at_end"] = others_testing()
    if hosts.problems:
        info["teardown_problems"] = hosts.problems
    status = report(results, args) or status
    params = {k: getattr(args, k) for k in ("quick", "http_rounds", "http_seconds", "concurrency", "tcp_rounds",
                                            "tcp_seconds", "tcp_rounds3", "link_rate", "rates")}
    write_json(args.json, {"benchmark": "overlay", "machine": info, "params": params, **results,
                           "discarded": args.discarded})
    return status


if __name__ == "__main__":
    sys.exit(main())
