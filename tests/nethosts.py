"""Test hosts on one machine: each a network namespace with its own address and its own
`dockerd`, all on one bridge (ARCHITECTURE.md's recipe).  Everything made is named with a
run tag and recorded in a state file, so `close()` (or, after a crash, `cleanup_stale()`)
removes exactly it: processes by pid, namespaces, links and iptables rules by name.

    with Hosts(3) as hosts:
        hosts[0].addr            # 10.77.0.11
        hosts[0].docker()        # SDK client for that host's engine
        hosts[0].run(["ip", "addr"])

`python tests/nethosts.py up N` keeps N hosts up until Ctrl-C.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

STATE_DIR = "/run/swarmpy-test-hosts"
SUBNET = "10.77.0"
ENGINE_TIMEOUT_S = 60.0


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _kill(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL: a dockerd needs its TERM to stop its containerd."""
    if not pid or not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def netns_unavailable() -> str | None:
    """Why the harness cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nsenter", "iptables", "dockerd"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@dataclass
class Host:
    index: int
    netns: str
    addr: str
    veth: str
    run_dir: str            # short: engine socket and exec root (unix socket paths are limited)
    work_dir: str           # data: the engine's data root, and room for the caller's
    dockerd_pid: int = 0
    rules: list[list[str]] = field(default_factory=list)     # iptables rules added in the netns

    @property
    def docker_host(self) -> str:
        return f"unix://{self.run_dir}/docker.sock"

    @property
    def nsenter(self) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.netns}"]

    def run(self, argv: list[str], check: bool = False, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.nsenter + list(argv), capture_output=True, text=True, check=check, **kw)

    def docker(self):
        import docker
        return docker.DockerClient(base_url=self.docker_host, timeout=60)

    # -- the engine ---------------------------------------------------------------------
    def start_engine(self) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        log = open(os.path.join(self.work_dir, "dockerd.log"), "ab")
        proc = subprocess.Popen(self.nsenter + [
            "dockerd", "--data-root", os.path.join(self.work_dir, "docker"), "--exec-root",
            os.path.join(self.run_dir, "e"), "-H", self.docker_host, "--pidfile",
            os.path.join(self.run_dir, "docker.pid"), "--bip", f"10.78.{self.index}.1/24"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.dockerd_pid = proc.pid
        deadline = time.monotonic() + ENGINE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                self.docker().ping()
                return
            except Exception:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"dockerd of {self.netns} did not answer; see {self.work_dir}/dockerd.log")

    def stop_engine(self) -> None:
        try:
            client = self.docker()
            for c in client.api.containers(all=True):
                client.api.remove_container(c["Id"], force=True)
        except Exception:
            pass
        _kill(self.dockerd_pid, timeout=20)

    # -- partitions -----------------------------------------------------------------------
    def partition(self) -> None:
        """Cut the host off: nothing in or out of eth0 (loopback stays)."""
        for rule in (["INPUT", "-i", "eth0", "-j", "DROP"], ["OUTPUT", "-o", "eth0", "-j", "DROP"]):
            self.run(["iptables", "-w", "-I", *rule], check=True)
            self.rules.append(rule)

    def heal(self) -> None:
        while self.rules:
            self.run(["iptables", "-w", "-D", *self.rules.pop()])


class Hosts:
    """N hosts on one bridge; a context manager that always tears down what it made."""

    def __init__(self, count: int, base_dir: str = "/tmp") -> None:
        cleanup_stale()
        self.tag = secrets.token_hex(2)
        self.bridge = f"spb{self.tag}"
        self.base = os.path.join(base_dir, f"swarmpy-hosts-{self.tag}")
        self.forward_rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        self.pids: list[int] = []
        self.hosts = [Host(i, f"sp{self.tag}h{i}", f"{SUBNET}.{10 + i}", f"sp{self.tag}v{i}",
                           f"/run/sp{self.tag}h{i}", os.path.join(self.base, f"h{i}"))
                      for i in range(1, count + 1)]
        self._save()
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        _sh("ip", "link", "set", self.bridge, "up")
        # The root dockerd sets FORWARD to DROP: let the hosts talk across the bridge.
        _sh("iptables", "-w", "-I", *self.forward_rule)
        for h in self.hosts:
            os.makedirs(h.work_dir, exist_ok=True)
            _sh("ip", "netns", "add", h.netns)
            _sh("ip", "link", "add", h.veth, "type", "veth", "peer", "name", f"{h.veth}p")
            _sh("ip", "link", "set", h.veth, "master", self.bridge, "up")
            _sh("ip", "link", "set", f"{h.veth}p", "netns", h.netns)
            for argv in (["ip", "link", "set", f"{h.veth}p", "name", "eth0"],
                         ["ip", "addr", "add", f"{h.addr}/24", "dev", "eth0"],
                         ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
                h.run(argv, check=True)
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(Host.start_engine, self.hosts))
        self._save()

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __len__(self) -> int:
        return len(self.hosts)

    def __enter__(self) -> "Hosts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- state, for cleanup after a crash ------------------------------------------------
    @property
    def state_file(self) -> str:
        return os.path.join(STATE_DIR, f"{self.tag}.json")

    def _save(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        with open(self.state_file, "w") as f:
            json.dump({"owner": os.getpid(), "tag": self.tag, "bridge": self.bridge, "base": self.base,
                       "forward_rule": self.forward_rule, "hosts": [asdict(h) for h in self.hosts],
                       "pids": self.pids}, f)

    def add_pid(self, pid: int) -> None:
        """A process the caller started in a host (a swarmpy daemon): killed at teardown."""
        self.pids.append(pid)
        self._save()

    def close(self) -> None:
        _teardown(self.bridge, self.base, self.forward_rule, self.hosts, self.pids)
        if os.path.exists(self.state_file):
            os.unlink(self.state_file)


def _teardown(bridge: str, base: str, forward_rule: list[str], hosts: list[Host], pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    with ThreadPoolExecutor(max(1, len(hosts))) as pool:
        list(pool.map(Host.stop_engine, hosts))
    ours = tuple(p for h in hosts for p in (h.run_dir, h.work_dir))
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    for mount in sorted((m for m in mounts if m.startswith(ours)), key=len, reverse=True):
        _sh("umount", "-l", mount, check=False)
    for h in hosts:
        _sh("ip", "netns", "del", h.netns, check=False)
        _sh("ip", "link", "del", h.veth, check=False)
        shutil.rmtree(h.run_dir, ignore_errors=True)
    _sh("ip", "link", "del", bridge, check=False)
    while _sh("iptables", "-w", "-D", *forward_rule, check=False).returncode == 0:
        pass
    shutil.rmtree(base, ignore_errors=True)


def cleanup_stale() -> None:
    """Tear down the hosts of runs whose owner process is gone (a killed pytest)."""
    if not os.path.isdir(STATE_DIR):
        return
    for name in os.listdir(STATE_DIR):
        path = os.path.join(STATE_DIR, name)
        try:
            with open(path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            continue
        if _alive(state["owner"]):
            continue
        hosts = [Host(**h) for h in state["hosts"]]
        _teardown(state["bridge"], state["base"], state["forward_rule"], hosts, state.get("pids", []))
        os.unlink(path)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "up":
        raise SystemExit("usage: python tests/nethosts.py up N")
    with Hosts(int(sys.argv[2])) as hosts:
        for h in hosts.hosts:
            print(f"{h.netns}  {h.addr}  DOCKER_HOST={h.docker_host}  shell: {' '.join(h.nsenter)} bash")
        print("Ctrl-C tears them down.")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
