"""Manager memory with 1,000 services x 10 tasks in the cluster store.

    python bench/memory.py [--services 1000] [--tasks-per-service 10] [--no-daemon] [--no-etcd]
                           [--json FILE]

Three measurements, each in its own process:

1. store: a real `raft.store.ClusterStore` (pysyncobj, one member, a temporary data
   dir, a free port on 127.0.0.1, a password) in a child process, which commits the
   services (`models.new_service`, 100 per transaction) and then the tasks
   (`models.new_task`, made to look like running tasks: a node, a container id,
   state RUNNING; 500 per transaction), and reports its own VmRSS (/proc/self/status)
   before and after, and the time the commits took.
2. daemon (unless --no-daemon): a whole swarmpy node (`swarmpy init` on a temporary
   data dir and socket), then the same number of services created through its HTTP
   API with --replicas 10 and a constraint no node satisfies, so that the orchestrator
   makes every task and the scheduler keeps them pending (no container is started).
   Reports the daemon's VmRSS before and after and how long until all tasks existed.
3. etcd (unless --no-etcd, and only if an `etcd` binary is on PATH): the same objects,
   JSON-encoded, put into a one-member etcd on 127.0.0.1 (128 puts per transaction),
   and etcd's VmRSS before and after.

The goal is a store process under 300 MB RSS with the objects in it.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import common  # noqa: F401  (puts the repository on sys.path)
from common import REPO, free_port_pair, machine, table, write_json

GOAL_MB = 300
MB = 1024 * 1024
SERVICE_BATCH = 100
TASK_BATCH = 500
UNSATISFIABLE = "node.labels.swarmpy-bench-no-such-label==1"


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


IDLE_S = 20.0


def cpu_s(pid: int | str = "self") -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


NODE_ID = "benchnode0000000000000000"


def make_services(n_services: int, per_service: int) -> list[dict]:
    """The services, as `ControlAPI.create_service` would store them."""
    from swarmpy.models import Resources, ServiceSpec, new_service
    return [new_service(ServiceSpec(name=f"bench-svc-{s:04d}", image="swarmpy-test/busybox:latest",
                                    command=["sleep", "3600"], env=[f"SERVICE_INDEX={s}"],
                                    labels={"com.example.team": "bench"}, replicas=per_service,
                                    reservations=Resources(nano_cpus=10 ** 7, memory_bytes=16 * MB)))
            for s in range(n_services)]


def running_task(service: dict, slot: int) -> dict:
    """A task of `service` as the store holds it once its container runs."""
    from swarmpy.models import TaskState, new_task
    task = new_task(service, slot, NODE_ID)
    task["status"].update(state=int(TaskState.RUNNING), message="started", container_id=os.urandom(32).hex())
    return task


# -- 1. the store alone, in a child process ------------------------------------------------------
def store_child(n_services: int, per_service: int, port: int, data_dir: str) -> dict:
    import gc

    before_store = proc_status()
    from raft.store import ClusterStore
    services = make_services(n_services, per_service)
    out: dict = {"rss_after_imports": before_store["VmRSS"]}

    async def run() -> None:
        store = ClusterStore(f"127.0.0.1:{port}", [], data_dir, password="bench-memory-password")
        try:
            await store.wait_ready()
            await asyncio.sleep(0.2)
            gc.collect()
            out["before"] = proc_status()
            c0 = cpu_s()
            await asyncio.sleep(IDLE_S)
            out["idle_cpu_percent_empty"] = 100 * (cpu_s() - c0) / IDLE_S
            t0 = time.perf_counter()
            for i in range(0, len(services), SERVICE_BATCH):
                await store.commit([{"op": "create", "kind": "services", "obj": s}
                                    for s in services[i:i + SERVICE_BATCH]])
            t1 = time.perf_counter()
            stored = [store.get("services", s["id"]) for s in services]
            tasks = [running_task(service, slot) for service in stored
                     for slot in range(1, per_service + 1)]
            t2 = time.perf_counter()
            for i in range(0, len(tasks), TASK_BATCH):
                await store.commit([{"op": "create", "kind": "tasks", "obj": t}
                                    for t in tasks[i:i + TASK_BATCH]])
            t3 = time.perf_counter()
            del tasks, stored
            gc.collect()
            out["after"] = proc_status()
            await asyncio.sleep(2.0)
            gc.collect()
            out["after_settle"] = proc_status()
            c0 = cpu_s()
            await asyncio.sleep(IDLE_S)
            out["idle_cpu_percent_loaded"] = 100 * (cpu_s() - c0) / IDLE_S
            out.update(commit_services_s=t1 - t0, make_tasks_s=t2 - t1, commit_tasks_s=t3 - t2,
                       commit_total_s=(t1 - t0) + (t3 - t2),
                       stored_services=len(store.list("services")), stored_tasks=len(store.list("tasks")),
                       raft=store.status())
        finally:
            store.close()

    asyncio.run(run())
    return out


def measure_store(args) -> dict:
    port = free_port_pair()
    data_dir = tempfile.mkdtemp(prefix="bench-mem-store-")
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-store", str(port), data_dir,
                               "--services", str(args.services), "--tasks-per-service",
                               str(args.tasks_per_service)],
                              capture_output=True, text=True, timeout=600, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"store child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["data_dir_bytes"] = sum(os.path.getsize(os.path.join(d, f))
                                       for d, _, files in os.walk(data_dir) for f in files)
        return result
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# -- 2. a whole daemon -------------------------------------------------------------------------------
def measure_daemon(args) -> dict:
    from swarmpy.cli.client import Client
    port = free_port_pair()
    data_dir = tempfile.mkdtemp(prefix="bench-mem-daemon-")
    sock = os.path.join(data_dir, "swarmpy.sock")
    host = f"unix://{sock}"
    env = dict(os.environ, SWARMPY_NO_PULL="1")
    swarmpy = [sys.executable, "-m", "swarmpy", "-H", host]
    result: dict = {}
    try:
        subprocess.run(swarmpy + ["init", "--data-dir", data_dir, "--listen-addr", f"127.0.0.1:{port}",
                                  "--hostname", "bench-memory"],
                       check=True, capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
        client = Client(host, timeout=120)
        pid = client.get("/info")["pid"]
        time.sleep(1.0)
        result["before"] = proc_status(pid)
        want = args.services * args.tasks_per_service
        c0 = cpu_s(pid)
        time.sleep(IDLE_S)
        result["idle_cpu_percent_empty"] = 100 * (cpu_s(pid) - c0) / IDLE_S
        t0 = time.perf_counter()
        marks = []
        for s in range(args.services):
            if s % 100 == 0:
                marks.append(time.perf_counter())
            client.call("POST", "/services", body={
                "name": f"bench-svc-{s:04d}", "image": "swarmpy-test/busybox:latest",
                "command": ["sleep", "3600"], "env": [f"SERVICE_INDEX={s}"],
                "labels": {"com.example.team": "bench"}, "replicas": args.tasks_per_service,
                "constraints": [UNSATISFIABLE],
                "reservations": {"nano_cpus": 10 ** 7, "memory_bytes": 16 * MB}})
        t1 = time.perf_counter()
        marks.append(t1)
        # seconds per 100 API creates, first hundred to last: grows if each pass scans every task
        result["create_s_per_100"] = [round(b - a, 2) for a, b in zip(marks, marks[1:])]
        count = 0
        deadline = time.monotonic() + args.daemon_timeout
        while time.monotonic() < deadline:
            tasks = client.get("/tasks")
            count = len(tasks)
            pending = sum(1 for t in tasks if t["status"]["state"] == 64)
            if count >= want and pending >= want:
                break
            del tasks
            time.sleep(1.0)
        t2 = time.perf_counter()
        result.update(create_api_s=t1 - t0, until_all_tasks_pending_s=t2 - t0, tasks=count,
                      all_tasks_made=count >= want)
        time.sleep(2.0)
        result["after"] = proc_status(pid)
        result["daemon_cpu_s"] = cpu_s(pid)
        c0 = cpu_s(pid)
        time.sleep(IDLE_S)
        result["idle_cpu_percent_loaded"] = 100 * (cpu_s(pid) - c0) / IDLE_S
    finally:
        try:
            subprocess.run(swarmpy + ["leave", "--force"], capture_output=True, text=True, timeout=120,
                           env=env, cwd=REPO)
        except subprocess.SubprocessError:
            pass
        pidfile = os.path.join(data_dir, "swarmpy.pid")
        _wait_gone(pidfile)
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def _wait_gone(pidfile: str, timeout: float = 30.0) -> None:
    """Wait for the daemon we started to exit; terminate it (by its own pid) if it does not."""
    try:
        pid = int(open(pidfile).read().strip())
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}") or _is_zombie(pid):
            return
        time.sleep(0.2)
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        pass


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


# -- 3. etcd, for reference --------------------------------------------------------------------------
def measure_etcd(args) -> dict:
    etcd = shutil.which("etcd")
    if not etcd:
        return {"available": False}
    version = subprocess.run([etcd, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    client_port = free_port_pair()
    peer_port = client_port + 1
    data_dir = tempfile.mkdtemp(prefix="bench-mem-etcd-")
    url = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    log = open(os.path.join(data_dir, "etcd.log"), "wb")
    proc = subprocess.Popen([etcd, "--name", "bench", "--data-dir", os.path.join(data_dir, "data"),
                             "--listen-client-urls", url, "--advertise-client-urls", url,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", f"bench={peer}"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    result: dict = {"available": True, "version": version}
    try:
        def post(path: str, body: dict) -> dict:
            req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())

        deadline = time.monotonic() + 30
        while True:
            try:
                post("/v3/kv/range", {"key": base64.b64encode(b"x").decode()})
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("etcd did not start; see its log")
                time.sleep(0.2)
        time.sleep(0.5)
        result["before"] = proc_status(proc.pid)
        kvs = []
        for service in make_services(args.services, args.tasks_per_service):
            service["version"] = 1
            kvs.append((f"/swarm/services/{service['id']}", service))
            for slot in range(1, args.tasks_per_service + 1):
                task = running_task(service, slot)
                kvs.append((f"/swarm/tasks/{task['id']}", task))
        encoded = [(base64.b64encode(k.encode()).decode(),
                    base64.b64encode(json.dumps(v, separators=(",", ":")).encode()).decode())
                   for k, v in kvs]
        result["value_bytes"] = sum(len(json.dumps(v, separators=(",", ":"))) for _, v in kvs)
        t0 = time.perf_counter()
        for i in range(0, len(encoded), 128):
            post("/v3/kv/txn", {"success": [{"request_put": {"key": k, "value": v}}
                                            for k, v in encoded[i:i + 128]]})
        result["commit_total_s"] = time.perf_counter() - t0
        count = post("/v3/kv/range", {"key": base64.b64encode(b"/swarm/").decode(),
                                      "range_end": base64.b64encode(b"/swarm0").decode(),
                                      "count_only": True}).get("count")
        result["stored_keys"] = int(count or 0)
        time.sleep(2.0)
        result["after"] = proc_status(proc.pid)
        c0 = cpu_s(proc.pid)
        time.sleep(IDLE_S)
        result["idle_cpu_percent_loaded"] = 100 * (cpu_s(proc.pid) - c0) / IDLE_S
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / MB:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--tasks-per-service", type=int, default=10)
    ap.add_argument("--no-daemon", action="store_true", help="skip the whole-daemon measurement")
    ap.add_argument("--no-etcd", action="store_true", help="skip the etcd reference")
    ap.add_argument("--daemon-timeout", type=float, default=300.0,
                    help="seconds to wait for the daemon to have made every task")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--child-store", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child_store:
        print(json.dumps(store_child(args.services, args.tasks_per_service,
                                     int(args.child_store[0]), args.child_store[1])))
        return 0

    info = machine(docker=not args.no_daemon)
    n_obj = f"{args.services} services x {args.tasks_per_service} tasks"
    print(f"memory with {n_obj} in the store")
    store = measure_store(args)
    print(f"  store: {store['stored_services']} services, {store['stored_tasks']} tasks committed "
          f"in {store['commit_total_s']:.2f} s")
    daemon = None
    if not args.no_daemon:
        daemon = measure_daemon(args)
        print(f"  daemon: {daemon['tasks']} tasks after {daemon['until_all_tasks_pending_s']:.1f} s")
    etcd = {"available": False, "skipped": True} if args.no_etcd else measure_etcd(args)
    if etcd.get("available"):
        print(f"  etcd: {etcd['stored_keys']} keys in {etcd['commit_total_s']:.2f} s")

    rows = [["swarmpy store (ClusterStore)", _mb(store["before"]["VmRSS"]), _mb(store["after"]["VmRSS"]),
             _mb(store["after_settle"]["VmRSS"]), _mb(store["after_settle"]["VmHWM"]),
             f"{store['commit_total_s']:.2f}"]]
    if daemon:
        rows.append(["swarmpy daemon (whole node)", _mb(daemon["before"]["VmRSS"]),
                     _mb(daemon["after"]["VmRSS"]), _mb(daemon["after"]["VmRSS"]),
                     _mb(daemon["after"]["VmHWM"]), f"{daemon['until_all_tasks_pending_s']:.2f}"])
    if etcd.get("available"):
        rows.append([f"etcd {etcd['version'].split()[-1]}", _mb(etcd["before"]["VmRSS"]),
                     _mb(etcd["after"]["VmRSS"]), _mb(etcd["after"]["VmRSS"]),
                     _mb(etcd["after"]["VmHWM"]), f"{etcd['commit_total_s']:.2f}"])
    print()
    print(table(["process", "RSS before MB", "RSS after MB", "after 2 s MB", "peak MB", "commit s"], rows))
    idle = [["swarmpy store", f"{store['idle_cpu_percent_empty']:.1f}", f"{store['idle_cpu_percent_loaded']:.1f}"]]
    if daemon:
        idle.append(["swarmpy daemon", f"{daemon['idle_cpu_percent_empty']:.1f}",
                     f"{daemon['idle_cpu_percent_loaded']:.1f}"])
        print(f"\ndaemon: seconds per 100 services created through the API: {daemon['create_s_per_100']}")
    if etcd.get("available"):
        idle.append(["etcd", "-", f"{etcd['idle_cpu_percent_loaded']:.1f}"])
    print(f"\nidle CPU over {IDLE_S:.0f} s (% of one core)")
    print(table(["process", "empty", "with the objects"], idle))
    rss = store["after_settle"]["VmRSS"]
    met = rss < GOAL_MB * MB
    print(f"\nstore RSS with the objects: {rss / MB:.1f} MB "
          f"({'meets' if met else 'does NOT meet'} the goal of < {GOAL_MB} MB)")
    if not etcd.get("available") and not args.no_etcd:
        print("etcd: not available (no etcd binary on PATH)")
    if daemon and not daemon["all_tasks_made"]:
        print(f"daemon: only {daemon['tasks']} tasks were made within {args.daemon_timeout:.0f} s")
    write_json(args.json, {"benchmark": "memory", "machine": info,
                           "params": {"services": args.services, "tasks_per_service": args.tasks_per_service,
                                      "service_batch": SERVICE_BATCH, "task_batch": TASK_BATCH},
                           "store": store, "daemon": daemon, "etcd": etcd,
                           "goal_mb": GOAL_MB, "goal_met": met})
    return 0 if met else 2


if __name__ == "__main__":
    sys.exit(main())
