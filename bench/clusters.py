"""Clusters on loopback for the multi-host benchmarks (failover.py, writes.py, worker_loss.py):
several swarmpy daemons, each its own process with its own ports, data dir and unix socket,
all on the one Docker engine; and a 3-member etcd cluster for reference.

Everything a benchmark starts is registered with a `Cleanup`, which undoes it in reverse
order on normal exit, on an error, on Ctrl-C and on SIGTERM: swarmpy nodes leave
(`swarmpy leave --force`), daemons still alive are stopped by their own pid (checked
against the data dir on their command line, so a reused pid is never hit), the
containers labelled with one of the cluster's node ids are removed, and the temporary
dirs are deleted.  Nothing is ever looked up or stopped by a broad name.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import common  # noqa: F401  (puts the repository on sys.path)
from common import REPO, free_port_pair

from swarmpy.cli.client import Client, DaemonError

IMAGE = "swarmpy-test/busybox:latest"
LABEL_NODE = "com.swarmpy.node.id"          # worker/engine.py: on every task container


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def default_json(name: str) -> str:
    """bench/results/NAME-YYYY-MM-DD.json (UTC date): where a run's results go unless --json says."""
    return os.path.join(REPO, "bench", "results", f"{name}-{time.strftime('%Y-%m-%d', time.gmtime())}.json")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def proc_cpu_s(pid: int | None) -> float:
    """utime + stime of a process, all its threads, in seconds (0 if it is gone)."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy_s() -> float:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def stop_pid(pid: int, must_contain: str, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, a process we started, if it is still the one we started
    (its command line names `must_contain`: our data dir)."""
    if not _alive(pid) or must_contain not in _cmdline(pid):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.05)


class Cleanup:
    """Runs registered undo steps, last first, however the benchmark ends.  SIGTERM is
    turned into KeyboardInterrupt so that `finally` blocks run for it too."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, callable]] = []

    def add(self, what: str, fn) -> None:
        self.steps.append((what, fn))

    def __enter__(self) -> "Cleanup":
        def on_term(signum, frame):
            raise KeyboardInterrupt(f"signal {signum}")
        self._old = signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(self, *exc) -> None:
        # A second Ctrl-C during the clean-up must not leave half of it undone.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            while self.steps:
                what, fn = self.steps.pop()
                try:
                    fn()
                except Exception as e:   # keep cleaning
                    print(f"cleanup: {what}: {e!r}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, self._old)


# -- swarmpy ---------------------------------------------------------------------------------
@dataclass
class Node:
    name: str
    data_dir: str
    sock: str
    port: int
    role: str = "manager"
    node_id: str = ""
    pids: list[int] = field(default_factory=list)     # every daemon pid it had (restarts)

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def pid(self) -> int | None:
        return self.pids[-1] if self.pids else None

    def client(self, timeout: float = 5.0) -> Client:
        return Client(self.host, timeout=timeout)

    def read_pid(self) -> int:
        with open(os.path.join(self.data_dir, "swarmpy.pid")) as f:
            pid = int(f.read().strip())
        if pid not in self.pids:
            self.pids.append(pid)
        return pid


class SwarmpyCluster:
    """swarmpy nodes on 127.0.0.1, each with a pair of free ports (cluster P, Raft P+1),
    a data dir and a socket under one temporary dir."""

    def __init__(self, prefix: str, cleanup: Cleanup, heartbeat: float | None = None,
                 repo: str = REPO) -> None:
        """`repo`: the checkout whose swarmpy the daemons run (another one's, to compare two
        versions of the code side by side in one run)."""
        self.root = tempfile.mkdtemp(prefix=f"bench-{prefix}-", dir="/tmp")
        self.prefix = prefix
        self.heartbeat = heartbeat
        self.repo = os.path.abspath(repo)
        self.nodes: dict[str, Node] = {}
        self.env = dict(os.environ, SWARMPY_NO_PULL="1")
        if self.repo != REPO:
            self.env["PYTHONPATH"] = self.repo
        cleanup.add(f"swarmpy cluster {self.root}", self.close)

    def _cli(self, node: Node, args: list[str], timeout: float = 120.0) -> str:
        proc = subprocess.run([sys.executable, "-m", "swarmpy", "-H", node.host] + args,
                              capture_output=True, text=True, env=self.env, timeout=timeout, cwd=self.repo)
        if proc.returncode != 0:
            raise RuntimeError(f"swarmpy {' '.join(args[:2])} on {node.name} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def _new_node(self, name: str, role: str) -> Node:
        node = Node(name=name, data_dir=os.path.join(self.root, name), sock=os.path.join(self.root, f"{name}.sock"),
                    port=free_port_pair(), role=role)
        self.nodes[name] = node
        return node

    def init(self, name: str) -> Node:
        node = self._new_node(name, "manager")
        extra = ["--dispatcher-heartbeat", f"{self.heartbeat}s"] if self.heartbeat else []
        self._cli(node, ["init", "--data-dir", node.data_dir, "--listen-addr", f"127.0.0.1:{node.port}",
                         "--hostname", f"{self.prefix}-{name}"] + extra)
        node.read_pid()
        node.node_id = node.client().get("/info")["node_id"]
        return node

    def join(self, name: str, role: str = "manager", via: str | None = None) -> Node:
        first = self.nodes[via or next(iter(self.nodes))]
        token = self._cli(first, ["join-token", "-q", role]).strip()
        node = self._new_node(name, role)
        self._cli(node, ["join", "--token", token, "--data-dir", node.data_dir, "--listen-addr",
                         f"127.0.0.1:{node.port}", "--hostname", f"{self.prefix}-{name}",
                         f"127.0.0.1:{first.port}"])
        node.read_pid()
        node.node_id = node.client().get("/info")["node_id"]
        return node

    def info(self, name: str, timeout: float = 2.0) -> dict | None:
        try:
            return self.nodes[name].client(timeout).get("/info")
        except (DaemonError, OSError, ValueError):
            return None

    def alive(self, name: str) -> bool:
        pid = self.nodes[name].pid
        return bool(pid) and _alive(pid)

    def leader(self) -> str | None:
        for name in self.nodes:
            if self.nodes[name].role == "manager" and self.alive(name):
                info = self.info(name)
                if info and info.get("is_leader"):
                    return name
        return None

    def kill(self, name: str) -> None:
        os.kill(self.nodes[name].pid, signal.SIGKILL)

    def wait_dead(self, name: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while _alive(self.nodes[name].pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} (pid {self.nodes[name].pid}) did not die")
            time.sleep(0.01)

    def restart(self, name: str) -> None:
        node = self.nodes[name]
        subprocess.run([sys.executable, "-m", "swarmpy", "daemon", "-d", "--data-dir", node.data_dir],
                       check=True, capture_output=True, text=True, env=self.env, timeout=120, cwd=self.repo)
        node.read_pid()

    def wait_caught_up(self, name: str, timeout: float = 60.0) -> float:
        """Until `name` answers, knows a leader, and has applied what the leader had
        committed when we asked; returns the seconds it took."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.info(name)
            leader = self.leader()
            linfo = self.info(leader) if leader else None
            if info and linfo and info["raft"].get("leader") and info.get("node_state") == "ready" \
                    and info["raft"]["last_applied"] >= linfo["raft"]["commit_index"]:
                return time.perf_counter() - t0
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not catch up within {timeout:.0f} s")

    def close(self) -> None:
        ids = [n.node_id for n in self.nodes.values() if n.node_id]
        for node in reversed(list(self.nodes.values())):
            if node.pid and _alive(node.pid):
                try:
                    self._cli(node, ["leave", "--force"], timeout=60)
                except (RuntimeError, subprocess.SubprocessError) as e:
                    print(f"cleanup: leave on {node.name}: {e}", file=sys.stderr)
        for node in self.nodes.values():
            for pid in node.pids:
                stop_pid(pid, node.data_dir)
        if ids:
            remove_containers(ids)
        shutil.rmtree(self.root, ignore_errors=True)


def remove_containers(node_ids: list[str]) -> int:
    """Remove the containers of these swarmpy nodes (by the label the agent puts on them)."""
    import docker
    client = docker.from_env(timeout=60)
    removed = 0
    try:
        for node_id in node_ids:
            for c in client.api.containers(all=True, filters={"label": f"{LABEL_NODE}={node_id}"}):
                try:
                    client.api.remove_container(c["Id"], force=True)
                    removed += 1
                except docker.errors.NotFound:
                    pass
    finally:
        client.close()
    return removed


# -- etcd ------------------------------------------------------------------------------------
def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


@dataclass
class EtcdMember:
    name: str
    data_dir: str
    client_port: int
    proc: subprocess.Popen | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port + 1}"


class EtcdCluster:
    """3 etcd members on 127.0.0.1 (client port P, peer port P+1 each), its default timings
    unless election_ms / heartbeat_ms are given."""

    def __init__(self, cleanup: Cleanup, size: int = 3, election_ms: int | None = None,
                 heartbeat_ms: int | None = None) -> None:
        self.binary = shutil.which("etcd")
        if not self.binary:
            raise RuntimeError("no etcd binary on PATH (apt-get install etcd-server)")
        self.version = subprocess.run([self.binary, "--version"], capture_output=True,
                                      text=True).stdout.split("\n")[0].split()[-1]
        self.root = tempfile.mkdtemp(prefix="bench-etcd-", dir="/tmp")
        self.election_ms, self.heartbeat_ms = election_ms, heartbeat_ms
        self.members = {f"e{i}": EtcdMember(f"e{i}", os.path.join(self.root, f"e{i}"), free_port_pair())
                        for i in range(size)}
        self.token = f"bench-{os.urandom(4).hex()}"
        cleanup.add(f"etcd cluster {self.root}", self.close)
        for name in self.members:
            self.start(name)
        self.wait_leader()

    def start(self, name: str) -> None:
        m = self.members[name]
        cluster = ",".join(f"{x.name}={x.peer_url}" for x in self.members.values())
        cmd = [self.binary, "--name", m.name, "--data-dir", m.data_dir,
               "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
               "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
               "--initial-cluster", cluster, "--initial-cluster-token", self.token,
               "--initial-cluster-state", "new", "--log-level", "warn", "--logger", "zap"]
        if self.election_ms:
            cmd += ["--election-timeout", str(self.election_ms)]
        if self.heartbeat_ms:
            cmd += ["--heartbeat-interval", str(self.heartbeat_ms)]
        log_file = open(os.path.join(self.root, f"{name}.log"), "ab")
        m.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log_file.close()
        m.pids.append(m.proc.pid)

    def post(self, name: str, path: str, body: dict, timeout: float = 5.0) -> dict:
        req = urllib.request.Request(self.members[name].url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def status(self, name: str, timeout: float = 1.0) -> dict | None:
        try:
            return self.post(name, "/v3/maintenance/status", {}, timeout)
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def leader(self) -> str | None:
        """The member that is leader, as the members that answer see it."""
        ids = {}
        leader_id = None
        for name, m in self.members.items():
            if m.proc is None or m.proc.poll() is not None:
                continue
            st = self.status(name)
            if st:
                ids[str(st["header"]["member_id"])] = name
                leader_id = str(st.get("leader", "0"))
        return ids.get(leader_id) if leader_id and leader_id != "0" else None

    def wait_leader(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader:
                return leader
            time.sleep(0.1)
        raise RuntimeError(f"etcd elected no leader within {timeout:.0f} s; see {self.root}/*.log")

    def kill(self, name: str) -> None:
        m = self.members[name]
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait()

    def wait_caught_up(self, name: str, timeout: float = 60.0) -> float:
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            st, lst = self.status(name), (self.status(leader) if leader else None)
            if st and lst and str(st.get("leader", "0")) != "0" \
                    and int(st.get("raftAppliedIndex", st.get("raftIndex", 0))) >= int(lst.get("raftIndex", 0)):
                return time.perf_counter() - t0
            time.sleep(0.1)
        raise RuntimeError(f"etcd member {name} did not catch up within {timeout:.0f} s")

    def close(self) -> None:
        for m in self.members.values():
            if m.proc is not None and m.proc.poll() is None:
                m.proc.terminate()
                try:
                    m.proc.wait(10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
