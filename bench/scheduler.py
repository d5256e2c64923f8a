"""The placement pass alone: 100,000 tasks onto 1,000 in-memory nodes.

    python bench/scheduler.py [--services 100] [--tasks-per-service 1000] [--nodes 1000]
                              [--repeat 3] [--profile] [--json FILE]

What is timed is what the scheduler component does on one pass once it has the
pending tasks: `NodeInfo.build` for every node, then `placement.place` (filters,
spread and the per-group heaps).  Writing the decisions to the store is not timed.
Shown for information: the pass after it, with the 100,000 tasks running on their
nodes (so NodeInfo.build reads them all) and one more service of 1,000 tasks pending.

The cluster is made to exercise every filter: nodes come in four sizes (2, 4, 8 and
16 CPUs, 4 GiB of memory per CPU), so the small ones fill up part way and later
services must skip them; every 10th node has the label disk=ssd and one service is
constrained to it; one service spreads over the label zone (5 zones).  Every task
reserves a little CPU and memory.

After the timed runs the result is checked independently of NodeInfo's own books:
every task placed, no node over its CPUs or memory, the constrained service only on
ssd nodes, the spread service even across zones (within one task), and every service
spread over nodes (over at least half the nodes it may use, and no node more than
one task above the even share over the nodes it uses).  The script
exits 1 if a check fails, 2 if the throughput goal is missed.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import statistics
import sys
import time
from collections import Counter, defaultdict

import common  # noqa: F401  (puts the repository on sys.path)
from common import machine, table, write_json

from swarmpy.manager.scheduler.nodeinfo import NodeInfo
from swarmpy.manager.scheduler.placement import place
from swarmpy.models import Resources, ServiceSpec, TaskState, new_service, new_task

SWARMKIT_S = 22.6            # SwarmKit's published figure for 100,000 tasks on 1,000 nodes
GOAL_TASKS_PER_S = 10_000
GIB = 1024 ** 3
MIB = 1024 ** 2
ZONES = 5
CONSTRAINED, SPREAD = 0, 1   # which services carry the constraint and the spread preference


def make_nodes(n: int) -> list[dict]:
    nodes = []
    for i in range(n):
        cpus = (2, 4, 8, 16)[i % 4]
        labels = {"zone": f"z{i % ZONES}"}
        if i % 10 == 0:
            labels["disk"] = "ssd"
        node_id = f"node{i:05d}" + "x" * 16
        nodes.append({"id": node_id,
                      "spec": {"role": "worker", "availability": "active", "labels": labels},
                      "description": {"hostname": f"host{i}",
                                      "platform": {"os": "linux", "arch": "x86_64"},
                                      "resources": {"nano_cpus": cpus * 10 ** 9,
                                                    "memory_bytes": cpus * 4 * GIB, "generic": {}}},
                      "status": {"state": "ready", "message": "", "addr": "127.0.0.1", "timestamp": 0.0},
                      "created_at": 0.0, "version": 1})
    return nodes


def make_tasks(services: int, per_service: int, first: int = 0) -> tuple[list[dict], dict[str, dict]]:
    tasks, by_id = [], {}
    for s in range(first, first + services):
        spec = ServiceSpec(name=f"svc{s}", image="swarmpy-test/busybox:latest", command=["sleep", "3600"],
                           replicas=per_service,
                           reservations=Resources(nano_cpus=(1 + s % 5) * 10 ** 7,        # 0.01-0.05 CPU
                                                  memory_bytes=(16 + 16 * (s % 4)) * MIB))  # 16-64 MiB
        if s == CONSTRAINED:
            spec.constraints = ["node.labels.disk==ssd"]
        if s == SPREAD:
            spec.preferences = ["spread=node.labels.zone"]
        service = new_service(spec)
        service["version"] = 1
        by_id[service["id"]] = service
        for slot in range(1, per_service + 1):
            task = new_task(service, slot)
            task["status"]["state"] = int(TaskState.PENDING)
            tasks.append(task)
    return tasks, by_id


def run_once(nodes: list[dict], tasks: list[dict]):
    t0 = time.perf_counter()
    infos = {n["id"]: NodeInfo.build(n, ()) for n in nodes}
    t1 = time.perf_counter()
    decisions = place(tasks, infos)
    t2 = time.perf_counter()
    return decisions, t1 - t0, t2 - t1


def steady_state(nodes: list[dict], decisions, services: int, per_service: int) -> dict:
    """The pass that follows: every placed task now RUNNING on its node, one more service of
    `per_service` tasks pending.  Times NodeInfo.build over all the running tasks, and place."""
    by_node: dict[str, list[dict]] = defaultdict(list)
    for d in decisions:
        if d.node_id:
            by_node[d.node_id].append(dict(d.task, node_id=d.node_id,
                                           status=dict(d.task["status"], state=int(TaskState.RUNNING))))
    new, _ = make_tasks(1, per_service, first=services)
    t0 = time.perf_counter()
    infos = {n["id"]: NodeInfo.build(n, by_node[n["id"]]) for n in nodes}
    t1 = time.perf_counter()
    placed = place(new, infos)
    t2 = time.perf_counter()
    return {"running_tasks": sum(len(v) for v in by_node.values()), "new_tasks": len(new),
            "placed": sum(1 for d in placed if d.node_id), "build_s": t1 - t0, "place_s": t2 - t1}


def check(nodes: list[dict], services: dict[str, dict], decisions, n_tasks: int) -> list[str]:
    """Problems found, checked from the decisions and the specs alone."""
    problems = []
    node_by_id = {n["id"]: n for n in nodes}
    if len(decisions) != n_tasks:
        problems.append(f"{len(decisions)} decisions for {n_tasks} tasks")
    unplaced = [d for d in decisions if d.node_id is None]
    if unplaced:
        problems.append(f"{len(unplaced)} tasks not placed, e.g. {unplaced[0].explanation}")
    cpu, mem = Counter(), Counter()
    per_service_node: dict[str, Counter] = defaultdict(Counter)
    seen = set()
    for d in decisions:
        if d.node_id is None:
            continue
        if d.task["id"] in seen:
            problems.append(f"task {d.task['id']} placed twice")
        seen.add(d.task["id"])
        res = d.task["spec"]["reservations"]
        cpu[d.node_id] += res["nano_cpus"]
        mem[d.node_id] += res["memory_bytes"]
        per_service_node[d.task["service_id"]][d.node_id] += 1
    over = [nid for nid in cpu
            if cpu[nid] > node_by_id[nid]["description"]["resources"]["nano_cpus"]
            or mem[nid] > node_by_id[nid]["description"]["resources"]["memory_bytes"]]
    if over:
        problems.append(f"{len(over)} nodes over their resources, e.g. {over[0]}")
    for service_id, counts in per_service_node.items():
        spec = services[service_id]["spec"]
        if spec["constraints"]:
            bad = [nid for nid in counts if node_by_id[nid]["spec"]["labels"].get("disk") != "ssd"]
            if bad:
                problems.append(f"service {spec['name']}: {len(bad)} nodes break its constraint")
        if spec["preferences"]:
            zones = Counter()
            for nid, c in counts.items():
                zones[node_by_id[nid]["spec"]["labels"]["zone"]] += c
            if len(zones) != ZONES or max(zones.values()) - min(zones.values()) > 1:
                problems.append(f"service {spec['name']}: uneven over zones {dict(zones)}")
        # roughly even: spread over at least half the nodes it could use (or one per task),
        # and no node more than one task above the even share over the nodes it does use
        n = sum(counts.values())
        allowed = sum(1 for node in nodes if not spec["constraints"]
                      or node["spec"]["labels"].get("disk") == "ssd")
        share = math.ceil(n / len(counts))
        if len(counts) < min(n, allowed) / 2 or max(counts.values()) > share + 1:
            problems.append(f"service {spec['name']}: uneven, {n} tasks on {len(counts)} of {allowed} "
                            f"nodes, up to {max(counts.values())} on one")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--tasks-per-service", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
    ap.add_argument("--profile", action="store_true", help="print the top functions of one more run")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()

    info = machine()
    nodes = make_nodes(args.nodes)
    t = time.perf_counter()
    tasks, services = make_tasks(args.services, args.tasks_per_service)
    print(f"{len(tasks)} tasks of {len(services)} services onto {len(nodes)} nodes "
          f"(made in {time.perf_counter() - t:.1f} s, not timed)")

    runs = []
    decisions = None
    for i in range(args.repeat):
        decisions, build_s, place_s = run_once(nodes, tasks)
        runs.append({"build_s": build_s, "place_s": place_s, "total_s": build_s + place_s})
        print(f"  run {i + 1}: build {build_s:.3f} s, place {place_s:.3f} s")
    problems = check(nodes, services, decisions, len(tasks))
    steady = steady_state(nodes, decisions, args.services, args.tasks_per_service)
    if steady["placed"] != steady["new_tasks"]:
        problems.append(f"steady-state pass: {steady['placed']} of {steady['new_tasks']} placed")

    total = statistics.median(r["total_s"] for r in runs)
    rate = len(tasks) / total
    per_node = Counter(d.node_id for d in decisions if d.node_id) or Counter({"": 0})
    print()
    print(table(["figure", "value"], [
        ["tasks", len(tasks)], ["nodes", len(nodes)],
        ["NodeInfo.build (median)", f"{statistics.median(r['build_s'] for r in runs):.3f} s"],
        ["place (median)", f"{statistics.median(r['place_s'] for r in runs):.3f} s"],
        ["total (median)", f"{total:.3f} s"],
        ["tasks/s", f"{rate:,.0f}"],
        ["SwarmKit (published)", f"{SWARMKIT_S} s"],
        ["speed-up vs SwarmKit", f"{SWARMKIT_S / total:.1f}x"],
        ["tasks per node min/max", f"{min(per_node.values())}/{max(per_node.values())}"],
        [f"next pass: build over {steady['running_tasks']} running", f"{steady['build_s']:.3f} s"],
        [f"next pass: place {steady['new_tasks']} new", f"{steady['place_s']:.3f} s"],
        ["goal >= 10,000 tasks/s", "met" if rate >= GOAL_TASKS_PER_S else "NOT met"],
        ["checks", "passed" if not problems else f"{len(problems)} FAILED"],
    ]))
    for p in problems:
        print("CHECK FAILED:", p)

    profile_top = None
    if args.profile:
        prof = cProfile.Profile()
        infos = {n["id"]: NodeInfo.build(n, ()) for n in nodes}
        prof.enable()
        place(tasks, infos)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
        profile_top = out.getvalue()
        print(profile_top)

    write_json(args.json, {
        "benchmark": "scheduler", "machine": info,
        "params": {"services": args.services, "tasks_per_service": args.tasks_per_service,
                   "nodes": args.nodes, "repeat": args.repeat},
        "runs": runs, "median_total_s": total, "tasks_per_s": rate,
        "swarmkit_s": SWARMKIT_S, "speedup_vs_swarmkit": SWARMKIT_S / total,
        "steady_state_pass": steady,
        "tasks_per_node": {"min": min(per_node.values()), "max": max(per_node.values())},
        "goal_tasks_per_s": GOAL_TASKS_PER_S, "goal_met": rate >= GOAL_TASKS_PER_S,
        "checks_passed": not problems, "problems": problems, "profile": profile_top})
    if problems:
        return 1
    return 0 if rate >= GOAL_TASKS_PER_S else 2


if __name__ == "__main__":
    sys.exit(main())
