"""Replicated write throughput with 3 managers: writes/s through swarmpy's HTTP API against
puts/s to a 3-member etcd, from the same Python client, with values of the same size.

    python bench/writes.py [--seconds 4] [--warmup 1] [--rounds 5] [--inflight 64] [--value-size 256]
                           [--targets leader,follower] [--modes sequential,inflight]
                           [--compare CHECKOUT] [--json FILE]

Both clusters run on 127.0.0.1 for the whole run.  The client is one Python process
(asyncio + aiohttp, keep-alive connections: a UnixConnector for swarmpy's socket, a
TCPConnector for etcd's JSON gateway).

* swarmpy write: one service update, POST /v1/services/{id}/update?version=N, of a service
  with 0 replicas, whose spec carries the value in an env variable (a new value on every
  write: the first 12 characters are a counter).  Each in-flight client
  owns one service and sends the version its previous update returned, so no write
  conflicts.  This is one Raft transaction (one "update" op with an expected version),
  committed by a majority and applied on the manager that answered before it answers;
  on the leader the orchestrator then looks at the service (0 replicas: nothing to do).
* etcd write: POST /v3/kv/put of one key per in-flight client; the value is the same JSON
  document that the swarmpy update sends as its body (--value-size sets the length of the
  env value in it, new on every write), so both carry the same bytes.

Two modes: sequential (1 request at a time) and --inflight requests at once, each sent
to the leader and, with --targets ...,follower, to a follower (swarmpy forwards the write
to the leader through pysyncobj; etcd forwards the proposal).  Each measurement is --rounds
pairs of windows, one of swarmpy and one of etcd, alternating which goes first; each
window runs for --warmup + --seconds, and requests that finish in the warm-up are not
counted.  Rates and latencies are the medians over the rounds, the ratio is the median of
the rounds' own ratios.  The CPU seconds of every daemon, every etcd member, the client and
the whole machine are recorded per window, and summed into CPU ms per write.

--compare CHECKOUT runs a second swarmpy cluster from another checkout (`git worktree add
/tmp/base COMMIT`) and measures it in the same rounds, in rotating order: a change is judged
against its base on the same machine in the same minutes, which separate runs on this VM
cannot do.

The goal is swarmpy >= 1.0 x etcd in writes/s; exit status 2 if any leader measurement
misses it.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

import aiohttp
import msgpack

import common  # noqa: F401  (puts the repository on sys.path)
from clusters import (Cleanup, EtcdCluster, IMAGE, SwarmpyCluster, b64, default_json, log, percentile,
                      proc_cpu_s, system_busy_s)
from common import REPO, machine, table, write_json

GOAL_RATIO = 1.0
ISSUE_ETCD = {"sequential_per_s": 654, "sequential_p50_ms": 1.5, "inflight64_per_s": 3700}


def body_for(name: str, value: str) -> dict:
    return {"name": name, "image": IMAGE, "replicas": 0, "command": ["sleep", "3600"], "env": [f"V={value}"]}


_WRITES = itertools.count()


def fresh_value(size: int) -> str:
    """A value of `size` characters that no earlier write of this run had: each write
    changes what it stores, on both systems (an update that changed nothing would let
    swarmpy write less than etcd)."""
    return f"{next(_WRITES):012d}{'v' * max(0, size - 12)}"


async def drive(session: aiohttp.ClientSession, make_request, inflight: int, warmup: float,
                seconds: float) -> dict:
    """`inflight` loops, each sending `make_request(i)` (a coroutine that returns True on
    success) back to back until warmup + seconds have passed."""
    t0 = time.perf_counter()
    start, stop = t0 + warmup, t0 + warmup + seconds
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def loop(i: int) -> None:
        while True:
            t = time.perf_counter()
            if t >= stop:
                return
            try:
                ok, detail = await make_request(i)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            end = time.perf_counter()
            if not ok:
                errors[detail[:100]] = errors.get(detail[:100], 0) + 1
            elif t >= start and end <= stop:
                latencies.append(end - t)

    await asyncio.gather(*(loop(i) for i in range(inflight)))
    return {"count": len(latencies), "seconds": seconds, "per_s": len(latencies) / seconds,
            "p50_ms": 1000 * percentile(latencies, 50) if latencies else None,
            "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
            "mean_ms": 1000 * statistics.mean(latencies) if latencies else None,
            "errors": errors}


class CpuWindow:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.perf_counter()
        self.start = {k: proc_cpu_s(p) for k, p in pids.items()}
        self.sys0 = system_busy_s()
        self.client0 = sum(os.times()[:2])

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        out = {k: round(proc_cpu_s(p) - self.start[k], 2) for k, p in self.pids.items()}
        out["client"] = round(sum(os.times()[:2]) - self.client0, 2)
        out["machine_busy"] = round(system_busy_s() - self.sys0, 2)
        out["machine_capacity"] = round(wall * (os.cpu_count() or 1), 2)
        # What else ran on the machine meanwhile (other people's work, dockerd, the kernel).
        out["others"] = round(out["machine_busy"] - sum(out[k] for k in self.pids) - out["client"], 2)
        return out


async def run_swarmpy(sock: str, services: list[dict], value: str, inflight: int, args) -> dict:
    connector = aiohttp.UnixConnector(path=sock, limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        versions = {s["id"]: s["version"] for s in services}

        async def update(i: int):
            svc = services[i]
            url = f"http://swarmpy/v1/services/{svc['id']}/update?version={versions[svc['id']]}"
            async with session.post(url, json=body_for(svc["spec"]["name"], fresh_value(len(value)))) as resp:
                data = await resp.json(content_type=None)
                if resp.status != 200:
                    if resp.status == 409:     # should not happen: re-read the version
                        async with session.get(f"http://swarmpy/v1/services/{svc['id']}") as r2:
                            versions[svc["id"]] = (await r2.json())["version"]
                    return False, f"{resp.status} {data.get('message', '')}"
                versions[svc["id"]] = data["version"]
                return True, ""

        result = await drive(session, update, inflight, args.warmup, args.seconds)
    for s in services:      # the next measurement starts from the versions this one left
        s["version"] = versions[s["id"]]
    return result


async def run_etcd(url: str, name: str, value: str, inflight: int, args) -> dict:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        keys = [b64(f"/bench/writes/{i:04d}") for i in range(inflight)]

        async def put(i: int):
            # The same JSON document the swarmpy update sends as its body, new each write.
            encoded_value = b64(json.dumps(body_for(name, fresh_value(len(value)))))
            async with session.post(url + "/v3/kv/put", json={"key": keys[i], "value": encoded_value}) as resp:
                data = await resp.json(content_type=None)
                if resp.status != 200 or "error" in data:
                    return False, f"{resp.status} {data.get('error', '')}"
                return True, ""

        return await drive(session, put, inflight, args.warmup, args.seconds)


def start_swarmpy(prefix: str, cleanup: Cleanup, repo: str = REPO) -> SwarmpyCluster:
    log(f"starting 3 swarmpy managers from {repo}")
    cluster = SwarmpyCluster(prefix, cleanup, repo=repo)
    cluster.init("m1")
    cluster.join("m2")
    cluster.join("m3")
    for name in ("m2", "m3"):
        cluster.wait_caught_up(name)
    return cluster


def make_services(cluster: SwarmpyCluster, count: int, value: str) -> list[dict]:
    client = cluster.nodes[cluster.leader()].client(timeout=30)
    return [client.call("POST", "/services", body=body_for(f"wr-{i:03d}", value)) for i in range(count)]


def git_commit(repo: str) -> str:
    proc = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip()


def fmt(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def measure_pair(clusters: dict, etcd, target: str, inflight: int, services: dict, value: str,
                 pids: dict[str, int], args) -> dict:
    """--rounds paired measurements of swarmpy and etcd (and of the --compare checkout's
    swarmpy), rotating which goes first: this VM's speed drifts by a third over minutes
    (other tenants), so one long window of each compares different machines; the median of
    paired short rounds compares like with like."""
    et_leader = etcd.leader()
    et_member = et_leader if target == "leader" else next(n for n in etcd.members if n != et_leader)
    sp_nodes, sp_leaders = {}, {}
    for system, cluster in clusters.items():
        sp_leaders[system] = cluster.leader()
        sp_nodes[system] = sp_leaders[system] if target == "leader" else \
            next(n for n in cluster.nodes if n != sp_leaders[system])
    mode = "sequential" if inflight == 1 else f"{inflight} in flight"
    systems = list(clusters) + ["etcd"]
    rounds = []
    for r in range(args.rounds):
        pair = {}
        order = systems[r % len(systems):] + systems[:r % len(systems)]
        if len(systems) == 2 and r % 2:
            order = systems[::-1]
        for system in order:
            cpu = CpuWindow(pids)
            if system == "etcd":
                res = asyncio.run(run_etcd(etcd.members[et_member].url, services["swarmpy"][0]["spec"]["name"],
                                           value, inflight, args))
            else:
                sock = clusters[system].nodes[sp_nodes[system]].sock
                res = asyncio.run(run_swarmpy(sock, services[system][:inflight], value, inflight, args))
            res["cpu_s"] = cpu.stop()
            log(f"{target}, {mode}, round {r + 1}: {system} via {et_member if system == 'etcd' else sp_nodes[system]} "
                f"{res['per_s']:.0f}/s, p50 {fmt(res['p50_ms'])} ms, p99 {fmt(res['p99_ms'])} ms; "
                f"errors {res['errors']}; cpu {res['cpu_s']}")
            pair[system] = res
        for system in clusters:
            key = "ratio" if system == "swarmpy" else f"ratio_{system}"
            pair[key] = pair[system]["per_s"] / pair["etcd"]["per_s"] if pair["etcd"]["per_s"] else None
        rounds.append(pair)
    out = {"target": target, "inflight": inflight, "mode": mode, "rounds": rounds,
           "swarmpy_node": sp_nodes["swarmpy"], "swarmpy_leader": sp_leaders["swarmpy"],
           "etcd_member": et_member, "etcd_leader": et_leader}
    for system in systems:
        out[system] = _summary(rounds, system, args)
    for system in clusters:
        key = "ratio" if system == "swarmpy" else f"ratio_{system}"
        out[key] = statistics.median(p[key] for p in rounds if p[key] is not None)
    return out


def _summary(rounds: list[dict], system: str, args) -> dict:
    """Medians over the rounds, and CPU ms per write of each process over all of them (the
    warm-up's CPU and writes both counted: CPU is read around the whole window)."""
    runs = [p[system] for p in rounds]
    writes = sum(r["per_s"] for r in runs) * (args.seconds + args.warmup)
    cpu = {k: sum(r["cpu_s"][k] for r in runs) for k in runs[0]["cpu_s"]}
    return {"per_s": statistics.median(r["per_s"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs if r["p50_ms"] is not None),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs if r["p99_ms"] is not None),
            "errors": sum(sum(r["errors"].values()) for r in runs),
            "cpu_ms_per_write": {k: round(1000 * v / writes, 3) for k, v in cpu.items()
                                 if k.startswith(system) or k in ("client", "machine_busy")} if writes else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per round")
    ap.add_argument("--rounds", type=int, default=5, help="paired rounds per measurement (median reported)")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--value-size", type=int, default=256, help="bytes of the value in each write")
    ap.add_argument("--targets", default="leader,follower", help="leader, follower or both")
    ap.add_argument("--modes", default="sequential,inflight", help="sequential and/or inflight")
    ap.add_argument("--compare", metavar="CHECKOUT", default="",
                    help="also measure, in the same rounds, a cluster running another checkout's swarmpy "
                         "(a git worktree of another commit): A/B of two versions on the same machine")
    ap.add_argument("--json", default=default_json("writes"),
                    help="write the results to this file (default: %(default)s; '' for none)")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    if not set(targets) <= {"leader", "follower"}:
        ap.error("--targets takes leader and/or follower")

    info = machine()
    results: dict = {"benchmark": "writes", "machine": info, "params": vars(args), "measurements": [],
                     "issue_etcd_reference": ISSUE_ETCD}
    value = "v" * args.value_size
    with Cleanup() as cleanup:
        clusters = {"swarmpy": start_swarmpy("wr", cleanup)}
        if args.compare:
            clusters["compare"] = start_swarmpy("wrc", cleanup, repo=args.compare)
            results["compare"] = {"repo": os.path.abspath(args.compare), "git_commit": git_commit(args.compare)}
        log("starting 3 etcd members")
        etcd = EtcdCluster(cleanup)
        results["etcd_version"] = etcd.version

        services = {system: make_services(cluster, args.inflight, value) for system, cluster in clusters.items()}
        first = services["swarmpy"][0]
        etcd_value = json.dumps(body_for(first["spec"]["name"], value)).encode()
        # What one update's transaction is in the Raft entry: the changed field only (the env value).
        raft_entry = msgpack.packb([{"op": "patch", "kind": "services", "id": first["id"], "expect": 1,
                                     "copy": {"previous_spec": "spec"},
                                     "set": {"spec.env": first["spec"]["env"], "updated_at": first["updated_at"]}}])
        results["sizes"] = {"swarmpy_request_body_bytes": len(etcd_value), "etcd_value_bytes": len(etcd_value),
                            "swarmpy_raft_entry_bytes_approx": len(raft_entry)}
        log(f"value: {len(etcd_value)} bytes of JSON per write (swarmpy request body = etcd value); "
            f"swarmpy's Raft entry ~{len(raft_entry)} bytes")
        pids = {f"{system}_{n}": cluster.nodes[n].pid for system, cluster in clusters.items() for n in cluster.nodes}
        pids.update({f"etcd_{n}": m.proc.pid for n, m in etcd.members.items()})

        modes = [m for m in args.modes.split(",") if m]
        for target in targets:
            for inflight in [{"sequential": 1, "inflight": args.inflight}[m] for m in modes]:
                results["measurements"].append(
                    measure_pair(clusters, etcd, target, inflight, services, value, pids, args))

    rows = []
    for m in results["measurements"]:
        sp, et = m["swarmpy"], m["etcd"]
        rows.append([f"{m['target']}, {m['mode']}", f"{sp['per_s']:.0f}", fmt(sp["p50_ms"]), fmt(sp["p99_ms"]),
                     f"{et['per_s']:.0f}", fmt(et["p50_ms"]), fmt(et["p99_ms"]), fmt(m["ratio"], ".2f")])
    print()
    print(f"replicated writes, 3 members each, {results['sizes']['etcd_value_bytes']}-byte values, "
          f"medians of {args.rounds} paired rounds of {args.seconds:.0f} s; ratio: median of the rounds' ratios")
    print(table(["target, mode", "swarmpy/s", "p50 ms", "p99 ms", "etcd/s", "p50 ms", "p99 ms",
                 "swarmpy/etcd"], rows))
    print(f"\nthe issue's etcd figures (for reference): {ISSUE_ETCD['sequential_per_s']}/s sequential "
          f"(p50 {ISSUE_ETCD['sequential_p50_ms']} ms), {ISSUE_ETCD['inflight64_per_s']}/s with 64 in flight")
    for m in results["measurements"]:
        print(f"  {m['target']}, {m['mode']}: ratio per round "
              f"{' '.join(fmt(p['ratio'], '.2f') for p in m['rounds'])}; CPU ms per write "
              f"swarmpy {m['swarmpy']['cpu_ms_per_write']}, etcd {m['etcd']['cpu_ms_per_write']}")
        if "compare" in m:
            print(f"    --compare {results['compare']['git_commit']}: {m['compare']['per_s']:.0f}/s, ratio to etcd "
                  f"{fmt(m['ratio_compare'], '.2f')} (per round "
                  f"{' '.join(fmt(p['ratio_compare'], '.2f') for p in m['rounds'])}); CPU ms per write "
                  f"{m['compare']['cpu_ms_per_write']}")
    leader_ratios = [m["ratio"] for m in results["measurements"] if m["target"] == "leader"]
    met = bool(leader_ratios) and all(r is not None and r >= GOAL_RATIO for r in leader_ratios)
    results["goal_ratio"], results["goal_met"] = GOAL_RATIO, met
    print(f"goal swarmpy >= {GOAL_RATIO} x etcd (leader): {'met' if met else 'NOT met'}")
    write_json(args.json, results)
    return 0 if met else 2


if __name__ == "__main__":
    sys.exit(main())
