"""Time from `service create --replicas 50` to 50 tasks RUNNING: swarmpy against Docker's
own swarm mode on the same engine, and the engine's own limit (50 plain `docker run -d`,
8 at a time).

    python bench/converge.py [--rounds 3] [--replicas 50] [--parallel 8] [--json FILE]

Each round runs, in turn: Docker swarm mode, swarmpy, plain `docker run`.  Every side
is timed the same way: from just before its create command is started (the CLI
process is part of the time) until a poll every 0.1 s sees every task RUNNING.
After each measurement the service is removed and the script waits until its
containers are gone before the next one starts (not timed, shown for information).

Docker swarm: `docker swarm init --advertise-addr 127.0.0.1` if the engine is not in a
swarm yet (and `docker swarm leave --force` at the end only then), then
`docker service create --detach --replicas 50 --no-resolve-image --stop-grace-period 1s
--name NAME IMAGE_ID sleep 3600`.  The image is given by its id (sha256:...): swarm's
executor tries to pull any image named by tag before every task, which would send
traffic to a registry; named by id it uses the local image, as swarmpy does with
SWARMPY_NO_PULL=1.  Polled through the Engine API (the tasks of the service).

swarmpy: `SWARMPY_NO_PULL=1 swarmpy -H unix:///tmp/bench-sp.sock init --data-dir
/tmp/bench-sp --listen-addr 127.0.0.1:PORT` once, then per round `swarmpy -H ... service
create --name NAME --replicas 50 --stop-grace-period 1s swarmpy-test/busybox sleep 3600`,
polled through GET /v1/services on the daemon's socket (replicas_status.running);
`swarmpy -H ... leave --force` at the end.

Optional side `engine` (--sides ...,engine): the same containers created and started
straight through the Engine API, all at once: the engine's own floor, with no CLI
processes and no concurrency limit.

Nothing is pulled; everything listens on 127.0.0.1 or a unix socket.  Exit status 2 if
the goal (swarmpy <= 0.5 x swarm, medians) is missed, 1 if a side did not converge.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import common  # noqa: F401  (puts the repository on sys.path)
from common import REPO, free_port_pair, loadavg, machine, median, table, write_json

import docker

from swarmpy.cli.client import Client

IMAGE = "swarmpy-test/busybox:latest"
COMMAND = ["sleep", "3600"]
POLL_S = 0.1
GOAL_RATIO = 0.5
REFERENCE = {"swarm_s": 16.3, "plain_s": 5.9}    # an earlier run on this kind of machine
BENCH_LABEL = "swarmpy-bench"                     # on the plain `docker run` containers
SP_SOCKET = "/tmp/bench-sp.sock"
SP_DATA = "/tmp/bench-sp"


def swarmpy_cli() -> str:
    """The installed `swarmpy` entry point beside this interpreter (not a pyenv shim, whose
    start-up would be timed too), else whatever `swarmpy` is on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "swarmpy")
    return beside if os.access(beside, os.X_OK) else (shutil.which("swarmpy") or "swarmpy")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ensure_image(client: docker.DockerClient) -> str:
    """The test image's id; imported from /bin/busybox if it is missing (never pulled)."""
    try:
        return client.api.inspect_image(IMAGE)["Id"]
    except docker.errors.ImageNotFound:
        pass
    root = tempfile.mkdtemp(prefix="bench-busybox-")
    try:
        os.makedirs(os.path.join(root, "bin"))
        shutil.copy2("/bin/busybox", os.path.join(root, "bin", "busybox"))
        for name in ("sh", "sleep"):
            os.symlink("busybox", os.path.join(root, "bin", name))
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", IMAGE], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return client.api.inspect_image(IMAGE)["Id"]


def foreign_containers(client: docker.DockerClient, own: str) -> int:
    """Running containers that are not this round's: other work sharing the engine."""
    return sum(1 for c in client.api.containers(filters={"status": "running"})
               if own not in (c.get("Names") or [""])[0])


def wait_gone(client: docker.DockerClient, label: str, timeout: float = 180.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if not client.api.containers(all=True, filters={"label": label}):
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise RuntimeError(f"containers labelled {label} still there after {timeout:.0f} s")


def _pid_of(comm: str) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == comm:
                        return int(entry)
            except OSError:
                pass
    return None


def _proc_cpu_s(pid: int | None) -> float:
    """utime + stime of a process (its threads included), in seconds."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _system_busy_s() -> float:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]          # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _all_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (what it is, CPU seconds so far) for every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
            comm = text[text.index("(") + 1:text.rindex(")")]
            if comm.startswith("python"):
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                args = " ".join(a.decode(errors="replace") for a in argv[1:4] if a)
                comm = f"python {args[:60]}" if args else comm
            out[int(entry)] = (comm, _proc_cpu_s(int(entry)))
        except (OSError, ValueError):
            pass
    return out


class CpuMeter:
    """CPU seconds spent during a measurement: the whole machine, dockerd, containerd,
    the swarmpy daemon, and the other processes that were busiest (summed by name;
    only those alive at both ends, so short-lived runc and CLI processes are in
    `system` alone).  This shows what else shared the CPU."""

    def __init__(self, swarmpy_pid: int | None) -> None:
        self.pids = {"dockerd": _pid_of("dockerd"), "containerd": _pid_of("containerd"),
                     "swarmpy_daemon": swarmpy_pid}
        self.start = self._sample()
        self.start_all = _all_cpu()

    def _sample(self) -> dict:
        out = {k: _proc_cpu_s(pid) for k, pid in self.pids.items()}
        out["system"] = _system_busy_s()
        return out

    def stop(self) -> dict:
        end = self._sample()
        end_all = _all_cpu()
        result = {k: round(end[k] - self.start[k], 2) for k in end}
        others: dict[str, float] = {}
        ours = {pid for pid in self.pids.values() if pid} | {os.getpid()}
        for pid, (comm, cpu) in end_all.items():
            if pid in ours or pid not in self.start_all:
                continue
            delta = cpu - self.start_all[pid][1]
            if delta > 0:
                others[comm] = others.get(comm, 0.0) + delta
        result["others"] = {k: round(v, 2) for k, v in
                            sorted(others.items(), key=lambda kv: -kv[1])[:5] if v >= 0.05}
        return result


def converge(count_running, want: int, t0: float, timeout: float) -> dict:
    """Poll until `want` tasks run; times are from t0."""
    first = None
    running = 0
    while time.perf_counter() - t0 < timeout:
        running = count_running()
        now = time.perf_counter()
        if running and first is None:
            first = now - t0
        if running >= want:
            return {"ok": True, "seconds": now - t0, "first_running_s": first, "running": running}
        time.sleep(POLL_S)
    return {"ok": False, "seconds": None, "first_running_s": first, "running": running}


# -- Docker swarm mode ------------------------------------------------------------------------------
class SwarmSide:
    name = "docker swarm"

    def __init__(self, client: docker.DockerClient, image_id: str, args) -> None:
        self.client, self.image_id, self.args = client, image_id, args
        self.initialised = False

    def setup(self) -> None:
        state = self.client.info().get("Swarm", {}).get("LocalNodeState")
        self.had_gwbridge = bool(self.client.api.networks(names=["docker_gwbridge"]))
        if state == "inactive":
            subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                           check=True, capture_output=True, text=True)
            self.initialised = True
            log("docker swarm initialised (will leave at the end)")
        elif state != "active":
            raise RuntimeError(f"the engine's swarm state is {state!r}; expected inactive or active")
        else:
            log("engine already in a swarm: using it, and leaving it as it is")

    def run(self, name: str) -> dict:
        api = self.client.api
        t0 = time.perf_counter()
        subprocess.run(["docker", "service", "create", "--detach", "--replicas", str(self.args.replicas),
                        "--no-resolve-image", "--stop-grace-period", "1s", "--name", name,
                        self.image_id] + COMMAND, check=True, capture_output=True, text=True)
        created = time.perf_counter() - t0

        def count() -> int:
            return sum(1 for t in api.tasks(filters={"service": name, "desired-state": "running"})
                       if t.get("Status", {}).get("State") == "running")

        result = converge(count, self.args.replicas, t0, self.args.timeout)
        result["create_cmd_s"] = created
        return result

    def cleanup(self, name: str) -> float:
        t0 = time.perf_counter()
        subprocess.run(["docker", "service", "rm", name], capture_output=True, text=True)
        wait_gone(self.client, f"com.docker.swarm.service.name={name}")
        return time.perf_counter() - t0

    def teardown(self) -> None:
        if self.initialised:
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, text=True)
            log("left the docker swarm")
            if not self.had_gwbridge:   # `swarm init` made it and `swarm leave` keeps it
                subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True, text=True)


# -- swarmpy --------------------------------------------------------------------------------------
class SwarmpySide:
    name = "swarmpy"

    def __init__(self, client: docker.DockerClient, args) -> None:
        self.client, self.args = client, args
        self.host = f"unix://{SP_SOCKET}"
        self.env = dict(os.environ, SWARMPY_NO_PULL="1")
        self.started = False
        self.daemon_pid: int | None = None
        self.api = Client(self.host)

    def cli(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([swarmpy_cli(), "-H", self.host, *argv], capture_output=True, text=True,
                              env=self.env, check=check, cwd=REPO)

    def setup(self) -> None:
        if os.path.exists(SP_SOCKET) or os.path.exists(os.path.join(SP_DATA, "node.json")):
            raise RuntimeError(f"{SP_SOCKET} or {SP_DATA} is in use: a swarmpy node from an earlier run? "
                               f"(swarmpy -H {self.host} leave --force, then remove {SP_DATA})")
        port = free_port_pair()
        self.cli("init", "--data-dir", SP_DATA, "--listen-addr", f"127.0.0.1:{port}")
        self.started = True
        self.daemon_pid = self.api.get("/info")["pid"]
        # wait until the node has registered and is ready for tasks
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            nodes = self.api.get("/nodes")
            if nodes and nodes[0].get("status", {}).get("state") == "ready":
                break
            time.sleep(0.1)
        log(f"swarmpy node initialised on 127.0.0.1:{port} ({SP_DATA})")

    def run(self, name: str) -> dict:
        t0 = time.perf_counter()
        self.cli("service", "create", "--name", name, "--replicas", str(self.args.replicas),
                 "--stop-grace-period", "1s", IMAGE, *COMMAND)
        created = time.perf_counter() - t0

        def count() -> int:
            for s in self.api.get("/services"):
                if s["spec"]["name"] == name:
                    return s["replicas_status"]["running"]
            return 0

        result = converge(count, self.args.replicas, t0, self.args.timeout)
        result["create_cmd_s"] = created
        return result

    def cleanup(self, name: str) -> float:
        t0 = time.perf_counter()
        self.cli("service", "rm", name, check=False)
        wait_gone(self.client, f"com.swarmpy.service.name={name}")
        return time.perf_counter() - t0

    def teardown(self) -> None:
        if not self.started:
            return
        pid = None
        try:
            pid = int(open(os.path.join(SP_DATA, "swarmpy.pid")).read())
        except (OSError, ValueError):
            pass
        out = self.cli("leave", "--force", check=False)
        if out.returncode != 0:
            log(f"swarmpy leave --force failed: {out.stderr.strip()}")
        if pid is not None:
            deadline = time.monotonic() + 30
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
                time.sleep(0.2)
            else:
                if os.path.exists(f"/proc/{pid}"):
                    log(f"swarmpy daemon {pid} still running after leave: terminating it")
                    os.kill(pid, 15)
        shutil.rmtree(SP_DATA, ignore_errors=True)
        log("swarmpy node left")


# -- plain docker run -----------------------------------------------------------------------------------
class PlainSide:
    name = "plain docker run"

    def __init__(self, client: docker.DockerClient, args) -> None:
        self.client, self.args = client, args

    def setup(self) -> None:
        pass

    def run(self, name: str) -> dict:
        def one(i: int) -> str:
            out = subprocess.run(["docker", "run", "-d", "--name", f"{name}.{i}",
                                  "--label", f"{BENCH_LABEL}={name}", IMAGE] + COMMAND,
                                 check=True, capture_output=True, text=True)
            return out.stdout.strip()

        t0 = time.perf_counter()
        with ThreadPoolExecutor(self.args.parallel) as pool:
            ids = list(pool.map(one, range(1, self.args.replicas + 1)))
        created = time.perf_counter() - t0

        def count() -> int:
            return len(self.client.api.containers(filters={"label": f"{BENCH_LABEL}={name}",
                                                           "status": "running"}))

        result = converge(count, len(ids), t0, self.args.timeout)
        result["create_cmd_s"] = created
        return result

    def cleanup(self, name: str) -> float:
        t0 = time.perf_counter()
        ids = [c["Id"] for c in self.client.api.containers(all=True, filters={"label": f"{BENCH_LABEL}={name}"})]
        with ThreadPoolExecutor(self.args.parallel) as pool:
            list(pool.map(lambda cid: self.client.api.remove_container(cid, force=True), ids))
        wait_gone(self.client, f"{BENCH_LABEL}={name}")
        return time.perf_counter() - t0

    def teardown(self) -> None:
        pass


class EngineSide(PlainSide):
    """The engine's floor without any client overhead: the same containers created and
    started through the Engine API (docker SDK), all at once (--engine-parallel)."""
    name = "engine API, no limit"

    def run(self, name: str) -> dict:
        engine = docker.from_env(max_pool_size=self.args.engine_parallel + 4, timeout=120)
        api = engine.api

        def one(i: int) -> str:
            cid = api.create_container(IMAGE, COMMAND, name=f"{name}.{i}",
                                       labels={BENCH_LABEL: name})["Id"]
            api.start(cid)
            return cid

        t0 = time.perf_counter()
        try:
            with ThreadPoolExecutor(self.args.engine_parallel) as pool:
                ids = list(pool.map(one, range(1, self.args.replicas + 1)))
        finally:
            engine.close()
        created = time.perf_counter() - t0

        def count() -> int:
            return len(self.client.api.containers(filters={"label": f"{BENCH_LABEL}={name}",
                                                           "status": "running"}))

        result = converge(count, len(ids), t0, self.args.timeout)
        result["create_cmd_s"] = created
        return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=8, help="plain docker runs at a time")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one side may take to converge")
    ap.add_argument("--engine-parallel", type=int, default=50,
                    help="concurrent Engine API calls for the 'engine' side")
    ap.add_argument("--sides", default="swarm,swarmpy,plain",
                    help="which sides to run, in this order within a round: swarm, swarmpy, plain, "
                         "and engine (create+start through the Engine API, no client limit)")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()

    client = docker.from_env(timeout=120)
    info = machine(docker=True)
    image_id = ensure_image(client)
    tag = f"{os.getpid()}"
    all_sides = {"swarm": SwarmSide(client, image_id, args), "swarmpy": SwarmpySide(client, args),
                 "plain": PlainSide(client, args), "engine": EngineSide(client, args)}
    order = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in order if s not in all_sides]
    if unknown:
        ap.error(f"unknown side(s) {', '.join(unknown)}; use {', '.join(all_sides)}")
    sides = [all_sides[s] for s in order]
    results: dict[str, list[dict]] = {s: [] for s in order}
    status = 0
    set_up = []
    try:
        for key, side in zip(order, sides):
            side.setup()
            set_up.append(side)
        for r in range(1, args.rounds + 1):
            for key, side in zip(order, sides):
                name = f"spbench-{key}-{tag}-{r}"
                before = {"loadavg": loadavg(), "foreign_running": foreign_containers(client, name)}
                meter = CpuMeter(getattr(all_sides["swarmpy"], "daemon_pid", None))
                try:
                    res = side.run(name)
                except BaseException:       # interrupted or failed: remove what it started
                    try:
                        side.cleanup(name)
                    except Exception as exc:
                        log(f"cleanup of {name} failed: {exc}")
                    raise
                res["cpu_s"] = meter.stop()
                res.update(round=r, name=name, **before)
                res["cleanup_s"] = side.cleanup(name)
                results[key].append(res)
                shown = f"{res['seconds']:.2f} s" if res["ok"] else f"NOT converged ({res['running']} running)"
                log(f"round {r} {side.name:17s} {shown}  (create cmd {res['create_cmd_s']:.2f} s, "
                    f"first running {res['first_running_s'] or float('nan'):.2f} s, "
                    f"cleanup {res['cleanup_s']:.1f} s, load {before['loadavg'][0]}, "
                    f"{before['foreign_running']} other running containers)")
                log(f"    CPU seconds while converging: {res['cpu_s']}")
                if not res["ok"]:
                    status = 1
    finally:
        for side in reversed(set_up):
            try:
                side.teardown()
            except Exception as exc:  # keep tearing the others down
                log(f"teardown of {side.name} failed: {exc}")

    med = {k: median([x["seconds"] for x in v if x["ok"]]) for k, v in results.items()}
    rows = []
    for key, side in zip(order, sides):
        times = [f"{x['seconds']:.2f}" if x["ok"] else "fail" for x in results[key]]
        ref = REFERENCE.get({"swarm": "swarm_s", "plain": "plain_s"}.get(key, ""))
        rows.append([side.name, " ".join(times), f"{med[key]:.2f}" if med[key] else "-",
                     f"{ref}" if ref else "-"])
    print()
    print(f"{args.replicas} replicas, {args.rounds} rounds; seconds from create to all RUNNING")
    print(table(["side", "rounds (s)", "median (s)", "reference (s)"], rows))
    ratio = None
    if med.get("swarm") and med.get("swarmpy"):
        ratio = med["swarmpy"] / med["swarm"]
        print(f"\nswarmpy / swarm = {ratio:.2f} (goal <= {GOAL_RATIO}: {'met' if ratio <= GOAL_RATIO else 'NOT met'})")
    for floor in ("plain", "engine"):
        if med.get(floor) and med.get("swarmpy"):
            print(f"swarmpy / {all_sides[floor].name} = {med['swarmpy'] / med[floor]:.2f}")
    write_json(args.json, {"benchmark": "converge", "machine": info,
                           "params": {"rounds": args.rounds, "replicas": args.replicas,
                                      "parallel": args.parallel, "poll_s": POLL_S, "image": IMAGE,
                                      "image_id": image_id, "sides": order},
                           "results": results, "median_s": med, "ratio_swarmpy_swarm": ratio,
                           "reference": REFERENCE, "goal_ratio": GOAL_RATIO,
                           "goal_met": ratio is not None and ratio <= GOAL_RATIO})
    if status:
        return status
    return 0 if ratio is None or ratio <= GOAL_RATIO else 2


if __name__ == "__main__":
    sys.exit(main())
