"""Several "hosts" on this one machine, for multi-host tests: the host layer of the harness.

Each host is a network namespace with one interface, eth0 = 10.77.0.(10+i)/24, plugged into
one Linux bridge in the root namespace, and a Docker engine of its own (dockerd plus its own
containerd) started inside that namespace; see ARCHITECTURE.md, "Testing on one machine as a
real cluster".  The test image is imported into every engine from the host's busybox, never
pulled.

    with Hosts(3) as hosts:
        h1 = hosts[0]
        h1.docker().containers.run(IMAGE, ["busybox", "ping", "-c1", "10.77.0.12"], network_mode="host")
        p = h1.popen(["python", "-m", "swarmpy", ...], env=...)   # runs inside h1's namespace
        hosts[2].partition(); ...; hosts[2].heal()

Everything carries a short random run tag (names `snb<tag>`, `sn<tag>h<N>`, `sn<tag>v<N>`,
dirs `/run/sn<tag>`, `<tmp>/swarmpy-netns-<tag>`), so two runs never collide, and teardown
removes exactly what this run made: the processes it started (by pid and start time, never by
name), the processes still inside its namespaces, its cgroups, mounts under its dirs, its
links, its iptables rules and its dirs.  While a run is alive its state lies in
/run/swarmpy-netns-hosts/<tag>.json, locked (flock) by the process that owns it; a run whose
owner died (pytest killed with -9) is torn down from that file by `cleanup_stale()`, which
every `Hosts()` calls first.

Run `python -m tests.netns up 3` (from the repository root) to get three hosts by hand, or
`python -m tests.netns cleanup` to tear down what dead runs left behind.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

if __package__ in (None, ""):       # run as `python tests/netns.py`: make `swarmpy` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swarmpy.localengine import IMAGE, build_busybox_image, find_busybox  # noqa: E402

STATE_DIR = Path("/run/swarmpy-netns-hosts")
STATE_FORMAT = "tests/netns.py/1"      # cleanup_stale() touches only files that say this
PREFIX = "sn"                          # every name: sn<tag>h<N>, snb<tag>, sn<tag>v<N>, /run/sn<tag>
NETNS_DIR = Path("/run/netns")         # where `ip netns add` puts its handles
ENGINE_TIMEOUT = 60.0                  # for one engine to answer (5 at once on 2 cores: a few s)
STOP_GRACE = 10.0                      # SIGTERM -> SIGKILL for dockerd / containerd
TOOLS = ("ip", "nsenter", "iptables", "dockerd", "containerd", "runc", "containerd-shim-runc-v2")
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")   # root tools, in case PATH lacks them
_TAG_RE = re.compile(r"^[a-z0-9]{1,8}$")             # keeps "sn<tag>v<NN>" within IFNAMSIZ-1 = 15


# -- small helpers ------------------------------------------------------------------------------
def _path_env() -> dict[str, str]:
    """The environment for the tools we start: dockerd looks up runc, the shim, iptables and
    docker-proxy on PATH, which for a non-login root shell may lack the sbin dirs."""
    env = dict(os.environ)
    parts = env.get("PATH", "/usr/bin:/bin").split(":")
    env["PATH"] = ":".join(parts + [p for p in _SBIN if p not in parts])
    env.pop("NOTIFY_SOCKET", None)     # a dockerd of ours must not talk to systemd
    return env


def _which(tool: str) -> str | None:
    return shutil.which(tool, path=_path_env()["PATH"])


def _sh(argv: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check, timeout=timeout,
                          env=_path_env())


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, None if there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()     # after "(comm)": field 3 on
        return parts[0], int(parts[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Proc:
    """A process we started, named by pid *and* start time, so a recycled pid is never signalled."""
    pid: int
    start: int
    what: str = ""

    @classmethod
    def of(cls, pid: int, what: str = "") -> Proc:
        st = _stat(pid)
        return cls(pid, st[1] if st else -1, what)

    def alive(self) -> bool:
        st = _stat(self.pid)
        return st is not None and st[1] == self.start and st[0] not in "ZX"   # a zombie is gone

    def signal_group(self, sig: int) -> None:
        """Signal the process group it leads (we start everything with a new session).  If the
        leader is gone its group id cannot have been given to anyone else while members remain."""
        st = _stat(self.pid)
        if st is not None and st[1] != self.start:
            return                                  # the pid now belongs to someone else
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = STOP_GRACE, child: subprocess.Popen | None = None) -> None:
        """SIGTERM the process, give it `grace` seconds, then SIGKILL whatever is left of its group
        (dockerd's docker-proxy children, say); reap it if it is our child."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            _wait_until(lambda: not self.alive() or (child is not None and child.poll() is not None), grace)
        self.signal_group(signal.SIGKILL)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- one host -------------------------------------------------------------------------------------
@dataclass
class Host:
    """One namespace "host": its address, its engine, a work dir for the caller's data.

    Every field but the private ones is plain data, saved in the run's state file so that a
    later process can tear the host down after its owner died."""
    index: int                     # 1-based
    name: str                      # "h1", ... (handy as a swarmpy hostname)
    addr: str                      # 10.77.0.(10+index)
    netns: str                     # sn<tag>h<index>
    veth: str                      # root end of the veth pair; the other end is eth0 in the ns
    bip: str                       # the engine's docker0 address, 10.78.<index>.1/24
    docker_host: str               # unix:///run/sn<tag>/h<index>/d.sock
    workdir: str                   # empty dir for the caller's data (swarmpy data dirs, sockets)
    root: str                      # <run workdir>/h<index>: engine data, configs, logs
    run_dir: str                   # /run/sn<tag>/h<index>: exec-root, sockets (short paths)
    cgroup_parent: str             # /sn<tag>h<index>: containers' cgroups, removed at teardown
    labels: list[str] = field(default_factory=list)      # engine labels
    dockerd: Proc | None = None
    containerd: Proc | None = None
    procs: list[Proc] = field(default_factory=list)      # started via popen()
    partition_rules: list[list[str]] = field(default_factory=list)
    _owner: Hosts | None = field(default=None, repr=False, compare=False)
    _client: Any = field(default=None, repr=False, compare=False)
    _children: dict[int, subprocess.Popen] = field(default_factory=dict, repr=False, compare=False)

    # -- state file round trip
    def to_json(self) -> dict:
        # Not asdict(): it would deep-copy the private fields (a client, Popen objects, the owner).
        def plain(v):
            return asdict(v) if isinstance(v, Proc) else [plain(x) for x in v] if isinstance(v, list) else v
        return {f.name: plain(getattr(self, f.name)) for f in fields(self) if not f.name.startswith("_")}

    @classmethod
    def from_json(cls, data: Mapping) -> Host:
        data = dict(data)
        for key in ("dockerd", "containerd"):
            data[key] = Proc(**data[key]) if data.get(key) else None
        data["procs"] = [Proc(**p) for p in data.get("procs", [])]
        return cls(**data)

    def _save(self) -> None:
        if self._owner is not None:
            self._owner._save()

    # -- paths
    @property
    def netns_path(self) -> str:
        return str(NETNS_DIR / self.netns)

    @property
    def socket(self) -> str:
        return self.docker_host.removeprefix("unix://")

    @property
    def engine_log(self) -> Path:
        return Path(self.root) / "dockerd.log"

    # -- running things inside the namespace
    def wrap(self, argv: Sequence[str]) -> list[str]:
        """argv run inside this host's network namespace.  `nsenter --net`, not `ip netns exec`:
        the latter also remounts /sys, and dockerd then finds no devices cgroup."""
        return [_which("nsenter") or "nsenter", f"--net={self.netns_path}", "--", *argv]

    def run(self, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """subprocess.run inside the namespace (same keywords)."""
        kw.setdefault("env", _path_env())
        return subprocess.run(self.wrap(argv), **kw)

    def popen(self, argv: Sequence[str], env: Mapping[str, str] | None = None, **kw) -> subprocess.Popen:
        """Popen inside the namespace, in a session of its own; teardown kills its process group."""
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.wrap(argv), env=dict(env) if env is not None else _path_env(), **kw)
        self.procs.append(Proc.of(proc.pid, what=" ".join(argv)[:200]))   # nsenter execs: same pid
        self._children[proc.pid] = proc
        self._save()
        return proc

    def docker(self, timeout: int = 120):
        """A docker SDK client for this host's engine (one per host, closed at teardown)."""
        if self._client is None:
            import docker
            self._client = docker.DockerClient(base_url=self.docker_host, timeout=timeout)
        return self._client

    # -- network faults
    def partition(self) -> None:
        """Cut this host off from the others (lo keeps working).  The DROP rules sit in the
        namespace's mangle PREROUTING/POSTROUTING: that covers the host's own processes, its
        host-network containers and the traffic its bridged containers route out of eth0 (which
        INPUT/OUTPUT would miss), and the engine never rewrites the mangle table.  Local senders
        get EPERM at once; the other hosts see plain silence (timeouts)."""
        if self.partition_rules:
            return
        for rule in (["mangle", "PREROUTING", "-i", "eth0", "-j", "DROP"],
                     ["mangle", "POSTROUTING", "-o", "eth0", "-j", "DROP"]):
            self.run(_iptables("-I", rule), check=True, capture_output=True)
            self.partition_rules.append(rule)
            self._save()

    def heal(self) -> None:
        """Remove exactly the rules partition() added."""
        while self.partition_rules:
            rule = self.partition_rules[-1]
            self.run(_iptables("-D", rule), capture_output=True)
            self.partition_rules.pop()
            self._save()

    # -- the engine
    def start_engine(self, timeout: float = ENGINE_TIMEOUT) -> None:
        """Start containerd (if not running) and dockerd in the namespace; return once the engine answers."""
        if self.dockerd is not None and self.dockerd.alive():
            raise RuntimeError(f"{self.name}: its engine is running; stop_engine() first")
        root, run = Path(self.root), Path(self.run_dir)
        (root / "engine").mkdir(parents=True, exist_ok=True)
        run.mkdir(parents=True, exist_ok=True)
        if self.containerd is None or not self.containerd.alive():
            self._start_containerd(root, run)
        self._start_dockerd(root, run)
        self._wait_engine(timeout)

    def _start_containerd(self, root: Path, run: Path) -> None:
        # Our own containerd, always: dockerd 20.10 would otherwise use a system containerd if
        # /run/containerd/containerd.sock exists, whose shims (and so host-network containers)
        # live in the root namespace, shared by every host.
        sock = run / "c.sock"
        sock.unlink(missing_ok=True)
        config = root / "containerd.toml"
        config.write_text(f'version = 2\nroot = "{root / "engine" / "containerd"}"\n'
                          f'state = "{run / "c"}"\n'
                          'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                          f'[grpc]\n  address = "{sock}"\n')
        self.containerd = self._spawn([_which("containerd") or "containerd", "--config", str(config)],
                                      root / "containerd.log", "containerd")
        _wait_until(lambda: sock.exists() or not self.containerd.alive(), 20)
        if not sock.exists():
            raise RuntimeError(f"{self.name}: containerd did not start:\n{_log_tail(root / 'containerd.log')}")

    def _start_dockerd(self, root: Path, run: Path) -> None:
        # Our own config file: /etc/docker/daemon.json might set what our flags set, which
        # dockerd refuses.  The key path gives each engine its own ID (else all share
        # /etc/docker/key.json); dockerd 20.10 takes it from the file only.
        config = root / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(root / "key.json"), "labels": self.labels}))
        Path(self.socket).unlink(missing_ok=True)
        argv = [_which("dockerd") or "dockerd", "--config-file", str(config),
                "--data-root", str(root / "engine"), "--exec-root", str(run / "x"),
                "-H", self.docker_host, "--pidfile", str(run / "d.pid"),   # default pidfile is the root engine's
                "--bip", self.bip, "--containerd", str(run / "c.sock"),
                "--cgroup-parent", self.cgroup_parent]
        self.dockerd = self._spawn(argv, self.engine_log, "dockerd")

    def _spawn(self, argv: list[str], log: Path, what: str) -> Proc:
        with open(log, "ab") as out:
            child = subprocess.Popen(self.wrap(argv), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, env=_path_env(), start_new_session=True)
        self._children[child.pid] = child
        proc = Proc.of(child.pid, what)
        self._save()
        return proc

    def _wait_engine(self, timeout: float) -> None:
        def answers() -> bool:
            if not self.dockerd.alive():
                raise RuntimeError(f"{self.name}: dockerd exited:\n{_log_tail(self.engine_log)}")
            client = _engine_client(self.docker_host, timeout=5)
            if client is not None:
                client.close()
            return client is not None

        if not _wait_until(answers, timeout, interval=0.1):
            raise RuntimeError(f"{self.name}: engine did not answer in {timeout:.0f}s:\n"
                               f"{_log_tail(self.engine_log)}")

    def stop_engine(self, kill: bool = False) -> None:
        """Stop dockerd (SIGTERM, or SIGKILL to simulate a crash); containerd keeps running."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.dockerd is not None:
            child = self._children.pop(self.dockerd.pid, None)
            if kill:
                self.dockerd.signal_group(signal.SIGKILL)
                if child is not None:
                    child.wait(timeout=10)
            else:
                self.dockerd.stop(child=child)
            self.dockerd = None
            self._save()


def _iptables(verb: str, rule: Sequence[str]) -> list[str]:
    """rule = [table, chain, *match]; -w: engines run iptables concurrently and share the lock."""
    table, chain, *match = rule
    return [_which("iptables") or "iptables", "-w", "-t", table, verb, chain, *match]


# -- teardown pieces (used by close() and by cleanup_stale(), so they work from plain data) ----------
def _engine_client(docker_host: str, timeout: int):
    """A client if the engine answers, else None (the SDK asks for the API version on creation)."""
    import docker
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=timeout)
    except Exception:
        return None
    try:
        client.ping()
        return client
    except Exception:
        client.close()
        return None


def _remove_containers(host: Host) -> None:
    """Remove every container of the engine, so none keeps running once the engine is gone."""
    if host.dockerd is None or not host.dockerd.alive():
        return
    client = _engine_client(host.docker_host, timeout=30)
    if client is None:
        return                          # not answering: the cgroup sweep gets its containers
    try:
        for container in client.containers.list(all=True):
            try:
                container.remove(force=True)
            except Exception:
                pass                    # already going; the cgroup sweep catches stragglers
    finally:
        client.close()


def _netns_members(netns: str) -> list[int]:
    """Pids of the processes inside the namespace (shims, host-network containers, popen children
    that left their group): ours by construction, whatever their names."""
    try:
        st = os.stat(NETNS_DIR / netns)
    except OSError:
        return []
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                ns = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino):
                found.append(int(entry))
    return found


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount, in mount order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), left.split()[4])
            out.append((point, right.split()[0]))
    return out


def _cgroup_dirs(parent: str) -> list[Path]:
    """The cgroup dir `parent` in every mounted hierarchy (v1 controllers and v2)."""
    rel = parent.strip("/")
    if not rel:
        return []
    return [Path(point) / rel for point, fstype in _mountinfo()
            if fstype in ("cgroup", "cgroup2") and (Path(point) / rel).is_dir()]


def _sweep_cgroups(parent: str) -> None:
    """Kill what is left in our containers' cgroups, then remove the cgroups (deepest first)."""
    dirs = _cgroup_dirs(parent)
    for top in dirs:
        for sub, _, _ in os.walk(top):
            try:
                pids = Path(sub, "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
    for top in dirs:
        for sub, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
            _wait_until(lambda: _rmdir(sub), 3)


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False            # still busy: a killed task is still exiting


def _stop_host(host: Host, problems: list[str]) -> None:
    """Stop everything of one host that runs: its popen processes, containers, engine, stragglers.
    Each step on its own: the engine must be stopped even if removing containers failed."""
    def step(what: str, fn: Callable, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            problems.append(f"{host.name}: {what}: {exc!r}")

    for proc in host.procs:
        step(f"killing {proc.pid}", _kill_proc, proc)
    step("removing containers", _remove_containers, host)
    if host._client is not None:
        step("closing the client", host._client.close)
        host._client = None
    for proc in (host.dockerd, host.containerd):
        if proc is not None:
            step(f"stopping {proc.what}", proc.stop, STOP_GRACE, host._children.get(proc.pid))
    step("sweeping cgroups", _sweep_cgroups, host.cgroup_parent)
    step("killing what is left in the netns", _kill_netns_members, host.netns)
    for child in host._children.values():     # reap, so no zombie of ours is left
        step("reaping", child.wait, 5)


def _kill_proc(proc: Proc) -> None:
    proc.signal_group(signal.SIGKILL)
    if proc.alive():                           # started without a session of its own
        os.kill(proc.pid, signal.SIGKILL)


def _kill_netns_members(netns: str) -> None:
    """The namespace's leftovers (containerd shims and their children): SIGKILL until none is left."""
    for _ in range(20):
        members = _netns_members(netns)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"processes still in {netns}: {_netns_members(netns)}")


def mounts_under(dirs: Sequence[str]) -> list[str]:
    """Mount points at or below any of `dirs`."""
    prefixes = [d.rstrip("/") for d in dirs if d]
    return [p for p, _ in _mountinfo() if any(p == d or p.startswith(d + "/") for d in prefixes)]


def _unmount_under(dirs: Sequence[str]) -> None:
    """Lazily unmount what dockerd left under our dirs (overlay layers, netns bind mounts),
    deepest first; repeated because mounts may be stacked on one point."""
    for _ in range(5):
        points = mounts_under(dirs)
        if not points:
            return
        for point in sorted(points, key=lambda p: -p.count("/")):
            _sh(["umount", "-l", point], check=False)


@dataclass
class _Run:
    """What a run made, as saved in its state file: enough to tear it all down from scratch."""
    tag: str
    owner_pid: int
    bridge: str
    base: str                         # <workdir>/swarmpy-netns-<tag>
    run_root: str                     # /run/sn<tag>
    root_rules: list[list[str]] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"format": STATE_FORMAT, "tag": self.tag, "owner_pid": self.owner_pid, "bridge": self.bridge,
                "base": self.base, "run_root": self.run_root, "root_rules": self.root_rules,
                "hosts": [h.to_json() for h in self.hosts]}

    @classmethod
    def from_json(cls, data: Mapping) -> _Run:
        data = {k: v for k, v in data.items() if k != "format"}
        data["hosts"] = [Host.from_json(h) for h in data.get("hosts", [])]
        return cls(**data)


def _teardown(run: _Run, problems: list[str]) -> None:
    """Undo a run, each step on its own so one failure does not leave the rest behind."""
    def step(what: str, fn: Callable, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            problems.append(f"{what}: {exc!r}")

    with ThreadPoolExecutor(max_workers=max(1, len(run.hosts))) as pool:   # engines stop in parallel
        for fut in [pool.submit(_stop_host, h, problems) for h in run.hosts]:
            step("stopping a host", fut.result)
    dirs = [run.base, run.run_root]
    step("unmounting", _unmount_under, dirs)
    for host in run.hosts:
        step(f"deleting netns {host.netns}", _sh, ["ip", "netns", "del", host.netns], False)
        step(f"deleting {host.veth}", _sh, ["ip", "link", "del", host.veth], False)
    step(f"deleting {run.bridge}", _sh, ["ip", "link", "del", run.bridge], False)
    while run.root_rules:
        step("deleting an iptables rule", _sh, _iptables("-D", run.root_rules.pop()), False)
    left = mounts_under(dirs)
    if left:                          # never rm -rf through a mount point
        problems.append(f"still mounted, not removing {dirs}: {left}")
        return
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _tag_in_use(tag: str) -> bool:
    return ((STATE_DIR / f"{tag}.json").exists() or os.path.exists(f"/run/{PREFIX}{tag}")
            or os.path.exists(f"/sys/class/net/{PREFIX}b{tag}"))


# -- the hosts of one run -----------------------------------------------------------------------------
class Hosts:
    """`count` hosts on this machine, up when the constructor returns; `close()` (or leaving the
    `with` block) tears everything down, also after a failure half-way through the setup."""

    def __init__(self, count: int, tag: str | None = None, workdir: str | os.PathLike | None = None,
                 subnet: str = "10.77.0", engine_labels: Mapping[int, Sequence[str]] | None = None,
                 image: str = IMAGE, ping_check: bool = True) -> None:
        if not 1 <= count <= 99:
            raise ValueError("count must be 1..99")
        if tag is not None and not _TAG_RE.match(tag):
            raise ValueError("tag: 1 to 8 of [a-z0-9] (interface names must stay within 15 chars)")
        reason = netns_available()
        if reason:
            raise RuntimeError(f"cannot create hosts here: {reason}")
        cleanup_stale()
        self.problems: list[str] = []            # what teardown could not undo
        self.timings: dict[str, float] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._state_fd: int | None = None
        if tag is not None and _tag_in_use(tag):
            raise ValueError(f"run tag {tag!r} is in use")
        self.tag = tag or self._free_tag()
        base = Path(workdir or tempfile.gettempdir()) / f"swarmpy-netns-{self.tag}"
        self._run = _Run(tag=self.tag, owner_pid=os.getpid(), bridge=f"{PREFIX}b{self.tag}",
                         base=str(base), run_root=f"/run/{PREFIX}{self.tag}")
        labels = engine_labels or {}
        self._run.hosts = [self._plan(i, subnet, list(labels.get(i, []))) for i in range(1, count + 1)]
        self.state_file = STATE_DIR / f"{self.tag}.json"
        atexit.register(self.close)          # a forgotten close() still runs at interpreter exit
        try:
            self._create_state_file()
            started = time.monotonic()
            self._make_network()
            self.timings["network"] = time.monotonic() - started
            self._start_engines(image)
            self.timings["engines"] = time.monotonic() - started - self.timings["network"]
            if ping_check and count > 1:
                self._check_reachable()
            self.timings["up"] = time.monotonic() - started
        except BaseException:
            self.close()
            raise

    # -- names and plans
    @staticmethod
    def _free_tag() -> str:
        for _ in range(100):
            tag = secrets.token_hex(2)
            if not _tag_in_use(tag):
                return tag
        raise RuntimeError("no free run tag")

    def _plan(self, i: int, subnet: str, labels: list[str]) -> Host:
        root = Path(self._run.base) / f"h{i}"
        run_dir = f"{self._run.run_root}/h{i}"
        return Host(index=i, name=f"h{i}", addr=f"{subnet}.{10 + i}", netns=f"{PREFIX}{self.tag}h{i}",
                    veth=f"{PREFIX}{self.tag}v{i}", bip=f"10.78.{i}.1/24", docker_host=f"unix://{run_dir}/d.sock",
                    workdir=str(root / "work"), root=str(root), run_dir=run_dir,
                    cgroup_parent=f"/{PREFIX}{self.tag}h{i}", labels=labels, _owner=self)

    # -- state file: written before anything is made, so a kill at any point leaves a record
    def _create_state_file(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        # Lock it under a temporary name, then rename it into place: a cleaner never sees it unlocked.
        tmp = STATE_DIR / f".{self.tag}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._state_fd = fd
        self._save()
        os.rename(tmp, self.state_file)

    def _save(self) -> None:
        """Rewrite the state in place (the same inode keeps the owner's lock)."""
        if self._state_fd is None:
            return
        with self._lock:
            data = json.dumps(self._run.to_json(), indent=1).encode()
            os.ftruncate(self._state_fd, 0)
            os.pwrite(self._state_fd, data, 0)

    # -- setup
    def _make_network(self) -> None:
        br = self._run.bridge
        _sh(["ip", "link", "add", br, "type", "bridge"])
        _sh(["ip", "link", "set", br, "up"])
        # The root dockerd sets FORWARD's policy to DROP, and bridged frames pass FORWARD
        # when br_netfilter is loaded: let our bridge talk to itself.
        rule = ["filter", "FORWARD", "-i", br, "-o", br, "-j", "ACCEPT"]
        _sh(_iptables("-I", rule))
        self._run.root_rules.append(rule)
        self._save()
        for h in self._run.hosts:
            _sh(["ip", "netns", "add", h.netns])
            _sh(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns])
            _sh(["ip", "link", "set", h.veth, "master", br, "up"])
            _sh(["ip", "-n", h.netns, "addr", "add", f"{h.addr}/24", "dev", "eth0"])
            _sh(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
            _sh(["ip", "-n", h.netns, "link", "set", "lo", "up"])
            Path(h.workdir).mkdir(parents=True, exist_ok=True)

    def _start_engines(self, image: str) -> None:
        busybox = find_busybox()

        def up(host: Host) -> None:
            host.start_engine()
            build_busybox_image(host.docker(), image, busybox)

        with ThreadPoolExecutor(max_workers=len(self._run.hosts)) as pool:
            futures = [pool.submit(up, h) for h in self._run.hosts]
            errors = [f.exception() for f in futures]
        errors = [e for e in errors if e is not None]
        if errors:
            raise RuntimeError("; ".join(str(e) for e in errors)) from errors[0]

    def _check_reachable(self) -> None:
        """Fail early and clearly if the hosts cannot reach each other (e.g. FORWARD drops)."""
        first, busybox = self._run.hosts[0], find_busybox()
        for other in self._run.hosts[1:]:
            res = first.run([busybox, "ping", "-c1", "-W2", other.addr], capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"{first.name} cannot ping {other.name} ({other.addr}): "
                                   f"{res.stdout}{res.stderr} -- check `iptables -S FORWARD`")

    # -- access
    @property
    def hosts(self) -> list[Host]:
        return self._run.hosts

    @property
    def bridge(self) -> str:
        return self._run.bridge

    @property
    def workdir(self) -> str:
        """The run's dir under the given (or temp) workdir; removed at teardown."""
        return self._run.base

    @property
    def run_dir(self) -> str:
        return self._run.run_root

    @property
    def root_rules(self) -> list[list[str]]:
        return list(self._run.root_rules)

    def pids(self) -> list[Proc]:
        """Every process this run started (engines, containerds, popen children)."""
        return [p for h in self.hosts for p in (h.dockerd, h.containerd, *h.procs) if p is not None]

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    # -- teardown
    def close(self) -> None:
        """Tear everything down; safe to call twice.  Problems are kept in `self.problems` and
        printed, not raised: teardown must finish, and it runs after failed tests too."""
        if self._closed:
            return
        self._closed = True
        started = time.monotonic()
        atexit.unregister(self.close)
        _teardown(self._run, self.problems)
        if self._state_fd is not None:
            for leftover in (self.state_file, STATE_DIR / f".{self.tag}.{os.getpid()}.tmp"):
                leftover.unlink(missing_ok=True)
            os.close(self._state_fd)          # releases the lock
            self._state_fd = None
        self.timings["down"] = time.monotonic() - started
        for problem in self.problems:
            print(f"netns teardown ({self.tag}): {problem}", file=sys.stderr)

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- runs whose owner died ---------------------------------------------------------------------------
def cleanup_stale(state_dir: Path = STATE_DIR) -> list[str]:
    """Tear down every run whose owner is gone (its state file's lock is free); returns their tags.
    A live run keeps its file locked, so this never touches it; two cleaners never clean one run twice."""
    cleaned = []
    if not state_dir.is_dir():
        return cleaned
    for path in sorted(state_dir.glob("*.json")):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue                                   # its owner is alive
            try:
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    continue                               # another cleaner already did it
            except FileNotFoundError:
                continue
            try:
                data = json.loads(os.pread(fd, 1 << 22, 0))
            except ValueError:
                continue                                   # not ours to judge: leave it be
            if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
                continue                                   # someone else's file
            problems: list[str] = []
            _teardown(_Run.from_json(data), problems)
            for problem in problems:
                print(f"netns stale cleanup ({path.name}): {problem}", file=sys.stderr)
            path.unlink(missing_ok=True)
            cleaned.append(path.stem)
        finally:
            os.close(fd)
    return cleaned


def netns_available() -> str | None:
    """Why this machine cannot run the hosts harness, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables, dockerd)"
    for tool in TOOLS:
        if _which(tool) is None:
            return f"`{tool}` is not installed"
    if find_busybox() is None:
        return "no busybox binary to build the test image from (install busybox-static)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker SDK for Python is not installed"
    return None


# -- by hand ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str]) -> int:
    usage = "usage: python -m tests.netns up [COUNT] | cleanup"
    if not argv or argv[0] not in ("up", "cleanup"):
        print(usage, file=sys.stderr)
        return 2
    reason = netns_available()
    if reason:
        print(f"cannot run here: {reason}", file=sys.stderr)
        return 1
    if argv[0] == "cleanup":
        print("cleaned:", " ".join(cleanup_stale()) or "nothing")
        return 0
    count = int(argv[1]) if len(argv) > 1 else 3

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    # Both, explicitly: a shell starts background jobs with SIGINT ignored, and SIGTERM
    # would otherwise end Python without teardown.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    with Hosts(count) as hosts:
        print(f"run {hosts.tag}: {count} hosts up in {hosts.timings['up']:.1f}s on bridge {hosts.bridge}")
        for h in hosts:
            print(f"  {h.name}  {h.addr:<12} netns {h.netns}  workdir {h.workdir}")
            print(f"      DOCKER_HOST={h.docker_host}    nsenter --net={h.netns_path} sh")
        print("Ctrl-C tears it all down.", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            print("\ntearing down ...", flush=True)
    print(f"down in {hosts.timings['down']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
