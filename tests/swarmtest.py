"""Helpers for swarmpy's integration tests: a `Cluster` (one swarmpy node started with
`swarmpy init`, its CLI, its API, its containers), polling, ports, and the task states as
the API reports them.  The fixtures that build these live in tests/conftest.py."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest

from swarmpy.cli.client import UnixHTTPConnection

TEST_IMAGE = "swarmpy-test/busybox:latest"
LABEL_NODE = "com.swarmpy.node.id"
LABEL_SERVICE_NAME = "com.swarmpy.service.name"
LABEL_TASK = "com.swarmpy.task.id"
LABEL_SLOT = "com.swarmpy.task.slot"

# A command that runs until stopped and exits promptly on SIGTERM (plain `sleep` as PID 1
# ignores TERM, so `docker stop` would wait out the whole grace period).
LONG_RUNNING = ["sh", "-c", "trap 'exit 0' TERM; sleep 100000 & wait"]
# Flags that keep restarts and stops fast in tests.
FAST = ["--restart-delay", "0.2s", "--stop-grace-period", "1s"]


# -- helpers -----------------------------------------------------------------------------
def wait_for(predicate: Callable, timeout: float = 30.0, interval: float = 0.1, message: str = ""):
    """Poll `predicate` until it returns something truthy (returned); fail after `timeout` s.
    Exceptions from the predicate count as "not yet" and the last one is reported."""
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"; last exception: {last_exc!r}" if last_exc else f"; last value: {last!r}"
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {message or predicate}{detail}")
        time.sleep(interval)


def stays_true(predicate: Callable, duration: float, interval: float = 0.1, message: str = "") -> None:
    """Fail as soon as `predicate` is falsy during the next `duration` seconds."""
    deadline = time.monotonic() + duration
    while True:
        value = predicate()
        assert value, f"stopped holding: {message or predicate} (value {value!r})"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, unreaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


_reserved_ports: set[int] = set()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_pair() -> int:
    """A port P with P and P+1 free on 127.0.0.1 (swarmpy's Raft listens on P+1).  Taken below
    the ephemeral range, so that no outgoing connection grabs it before the daemon binds it."""
    low, high = 20000, _ephemeral_low() - 2
    for _ in range(500):
        port = random.randint(low, high) if high > low else random.randint(40000, 60000)
        if {port, port + 1} & _reserved_ports:
            continue
        if _port_free(port) and _port_free(port + 1):
            _reserved_ports.update((port, port + 1))
            return port
    raise RuntimeError("found no two adjacent free ports")


@dataclass
class Result:
    rc: int
    out: str
    err: str
    args: list

    def __str__(self) -> str:
        return f"`swarmpy {' '.join(map(str, self.args))}` -> rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


class Cluster:
    """One swarmpy node (a one-node cluster) run for a test, and the ways to look at it."""

    def __init__(self, docker_client, image: str, workdir: str, hostname: str, addr: str = "127.0.0.1",
                 netns: str | None = None, docker_host: str | None = None) -> None:
        self.docker = docker_client
        self.image = image
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        self.socket = f"/tmp/swarmpy-test-{uuid.uuid4().hex[:10]}.sock"   # short: AF_UNIX paths are limited
        self.host = f"unix://{self.socket}"
        self.hostname = hostname
        self.addr = addr                 # this node's address: loopback, or a test host's in its netns
        self.netns = netns               # the CLI (and so the daemon it starts) runs in this netns
        self.port = 0
        self.node_id = ""
        self.env = dict(os.environ, SWARMPY_NO_PULL="1")
        self.env.pop("SWARMPY_HOST", None)
        if docker_host:
            self.env["DOCKER_HOST"] = docker_host

    # -- lifecycle ----------------------------------------------------------------
    def _pick_port(self) -> int:
        # In its own netns a node has the ports to itself; on loopback nodes share them.
        return 2387 if self.netns else free_port_pair()

    def init(self, *extra: str, timeout: float = 90) -> Result:
        self.port = self._pick_port()
        result = self.cli("init", "--data-dir", self.data_dir, "--listen-addr", f"{self.addr}:{self.port}",
                          "--hostname", self.hostname, *extra, timeout=timeout)
        assert result.rc == 0, f"swarmpy init failed:\n{result}\nlog:\n{self.log_tail()}"
        self._read_node_id()
        return result

    def join(self, manager: "Cluster", role: str = "worker", *extra: str, timeout: float = 90) -> Result:
        """`swarmpy join --token <manager's ROLE token> MANAGER:PORT`, asserting it succeeded."""
        token = manager.ok("join-token", "-q", role).strip()
        result = self.try_join(f"{manager.addr}:{manager.port}", token, *extra, timeout=timeout)
        assert result.rc == 0, f"swarmpy join failed:\n{result}\nlog:\n{self.log_tail()}"
        self._read_node_id()
        return result

    def try_join(self, remote: str, token: str, *extra: str, timeout: float = 90) -> Result:
        self.port = self.port or self._pick_port()
        return self.cli("join", "--token", token, "--data-dir", self.data_dir, "--listen-addr",
                        f"{self.addr}:{self.port}", "--hostname", self.hostname, *extra, remote, timeout=timeout)

    def _read_node_id(self) -> None:
        with open(os.path.join(self.data_dir, "node.json")) as f:
            self.node_id = json.load(f)["node_id"]

    @property
    def pid(self) -> int | None:
        try:
            with open(os.path.join(self.data_dir, "swarmpy.pid")) as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None

    def daemon_alive(self) -> bool:
        pid = self.pid
        return pid is not None and pid_alive(pid)

    def kill_daemon(self) -> None:
        """kill -9 the daemon and wait until it is gone."""
        pid = self.pid
        assert pid is not None and pid_alive(pid), "the daemon is not running"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), timeout=15, message=f"daemon pid {pid} to die")

    def restart_daemon(self) -> Result:
        """`swarmpy daemon -d --data-dir DIR`: starts it again and waits until it is ready."""
        result = self.cli("daemon", "-d", "--data-dir", self.data_dir, host=False, timeout=90)
        assert result.rc == 0, f"restarting the daemon failed:\n{result}\nlog:\n{self.log_tail()}"
        return result

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(os.path.join(self.data_dir, "swarmpy.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def daemon_pids(self) -> set[int]:
        """Live processes running this node's daemon: the pid file's, and any process whose
        command line is `... swarmpy daemon --data-dir <this data dir>` (a stray second one)."""
        pids = {self.pid} if self.pid is not None else set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "swarmpy" in argv and "daemon" in argv and "--data-dir" in argv:
                i = argv.index("--data-dir")
                if i + 1 < len(argv) and os.path.abspath(argv[i + 1]) == os.path.abspath(self.data_dir):
                    pids.add(int(entry))
        return {pid for pid in pids if pid_alive(pid)}

    def teardown(self) -> None:
        """Always safe: leave --force, kill the daemon if alive, remove our containers and files."""
        pids = self.daemon_pids()
        serving = set()
        if os.path.exists(self.socket):
            try:
                serving = {self.api("GET", "/info", timeout=10)[1]["pid"]}
            except Exception:
                pass
            try:
                self.cli("leave", "--force", timeout=60)
            except Exception:
                pass
        deadline = time.monotonic() + 10      # give the daemon that left time to exit by itself
        while any(pid_alive(p) for p in serving) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = pids | self.daemon_pids()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in left) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.node_id:
            for summary in self.docker.api.containers(all=True, filters={"label": f"{LABEL_NODE}={self.node_id}"}):
                try:
                    self.docker.api.remove_container(summary["Id"], force=True)
                except Exception:
                    pass
        shutil.rmtree(self.workdir, ignore_errors=True)
        if os.path.exists(self.socket):
            os.unlink(self.socket)

    # -- the CLI --------------------------------------------------------------------
    def cli(self, *args: str, host: bool = True, timeout: float = 60, input: str | None = None) -> Result:
        """Run `swarmpy [-H this node's socket] ARGS...`."""
        argv = (["-H", self.host] if host else []) + [str(a) for a in args]
        prefix = ["nsenter", f"--net=/var/run/netns/{self.netns}"] if self.netns else []
        proc = subprocess.run([*prefix, sys.executable, "-m", "swarmpy", *argv], capture_output=True, text=True,
                              env=self.env, timeout=timeout, input=input, stdin=None if input else subprocess.DEVNULL)
        return Result(proc.returncode, proc.stdout, proc.stderr, argv)

    def ok(self, *args: str, **kwargs) -> str:
        """Run the CLI, assert it succeeded, return its stdout."""
        result = self.cli(*args, **kwargs)
        assert result.rc == 0, str(result)
        return result.out

    def create(self, name: str, *flags: str, command: list[str] | None = None, image: str | None = None) -> str:
        """`service create --name NAME FLAGS... IMAGE COMMAND...`; returns the service id."""
        out = self.ok("service", "create", "--name", name, *flags, image or self.image,
                      *(LONG_RUNNING if command is None else command))
        return out.strip()

    # -- the HTTP API ------------------------------------------------------------------
    def api(self, method: str, path: str, body=None, raw: bytes | str | None = None,
            timeout: float = 30) -> tuple[int, object]:
        """Call /v1{path}; returns (status, decoded JSON or text)."""
        conn = UnixHTTPConnection(self.socket, timeout)
        payload = raw if raw is not None else (json.dumps(body) if body is not None else None)
        try:
            conn.request(method, "/v1" + path, body=payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(data) if data else None
        except ValueError:
            return resp.status, data.decode(errors="replace")

    def get(self, path: str):
        status, data = self.api("GET", path)
        assert status == 200, f"GET {path} -> {status}: {data}"
        return data

    def tasks(self, service: str) -> list[dict]:
        return self.get(f"/tasks?service={service}")

    def service(self, ref: str) -> dict:
        return self.get(f"/services/{ref}")

    def service_names(self) -> set[str]:
        return {s["spec"]["name"] for s in self.get("/services")}

    # -- containers (this node's only) --------------------------------------------------------
    def containers(self, service: str | None = None, all: bool = False) -> list:
        """This node's containers (docker SDK objects), optionally one service's only.
        A container removed between listing and inspecting is left out, not an error."""
        import docker.errors
        labels = [f"{LABEL_NODE}={self.node_id}"]
        if service:
            labels.append(f"{LABEL_SERVICE_NAME}={service}")
        found = []
        for summary in self.docker.api.containers(all=all, filters={"label": labels}):
            try:
                found.append(self.docker.containers.get(summary["Id"]))
            except docker.errors.NotFound:
                pass
        return found

    def running_containers(self, service: str | None = None) -> list:
        return [c for c in self.containers(service, all=True) if c.status == "running"]

    # -- polling ------------------------------------------------------------------------
    wait_for = staticmethod(wait_for)
    stays_true = staticmethod(stays_true)


# Task states as the API reports them (SwarmKit's integers; swarmpy.models.TaskState).
RUNNING = 512
PENDING = 64
COMPLETE = 576
SHUTDOWN = 640
FAILED = 704
REJECTED = 768


def running_tasks(tasks: list[dict]) -> list[dict]:
    """Tasks meant to run that run."""
    return [t for t in tasks if t["desired_state"] == RUNNING and t["status"]["state"] == RUNNING]


class ClusterFactory:
    def __init__(self, docker_client, image: str, tmp_factory) -> None:
        self.docker, self.image, self.tmp_factory = docker_client, image, tmp_factory
        self.clusters: list[Cluster] = []

    def __call__(self, *init_flags: str, hostname: str | None = None) -> Cluster:
        cluster = self.node(hostname)
        cluster.init(*init_flags)
        return cluster

    def node(self, hostname: str | None = None) -> Cluster:
        """A node not yet in any cluster (init or join it), torn down with the others."""
        workdir = str(self.tmp_factory.mktemp("swarmpy-node"))
        cluster = Cluster(self.docker, self.image, workdir, hostname or f"node-{uuid.uuid4().hex[:6]}")
        self.clusters.append(cluster)
        return cluster

    def join(self, manager: Cluster, role: str = "worker", hostname: str | None = None) -> Cluster:
        cluster = self.node(hostname)
        cluster.join(manager, role)
        return cluster

    def teardown(self) -> None:
        for cluster in reversed(self.clusters):
            cluster.teardown()


class HostCluster:
    """A cluster over test hosts (tests/netns.py): node i runs in host i's netns with that
    host's engine; the first `managers` nodes are managers, the rest workers."""

    def __init__(self, hosts, image: str, managers: int) -> None:
        self.hosts = hosts
        self.nodes: list[Cluster] = []
        try:
            for i, h in enumerate(hosts.hosts):
                node = Cluster(h.docker(), image, os.path.join(str(h.workdir), "swarmpy"), f"h{h.index}",
                               addr=h.addr, netns=h.netns, docker_host=h.docker_host)
                self.nodes.append(node)
                if i == 0:
                    node.init("--dispatcher-heartbeat", "1s")
                else:
                    node.join(self.nodes[0], "manager" if i < managers else "worker")
        except BaseException:
            self.teardown()
            raise

    @property
    def managers(self) -> list[Cluster]:
        return [n for n in self.nodes if n.daemon_alive() and n.get("/info")["role"] == "manager"]

    def leader(self) -> Cluster | None:
        for n in self.nodes:
            try:
                if n.daemon_alive() and n.get("/info")["is_leader"]:
                    return n
            except Exception:
                continue
        return None

    def restart(self, node: Cluster) -> None:
        node.restart_daemon()

    def teardown(self) -> None:
        for node in reversed(self.nodes):
            node.teardown()
