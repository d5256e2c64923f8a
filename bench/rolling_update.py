"""Rolling update of a 20-replica service, swarmpy against Docker's own swarm mode on the same
engine: time from `service update` until all 20 tasks run the new spec, and until the
side reports the update completed.

    python bench/rolling_update.py [--rounds 5] [--replicas 20] [--change image|env]
                                   [--monitor DURATION] [--json FILE]

Each round, on each side (alternating which goes first): a fresh service of 20 replicas
(`sleep 3600` in swarmpy-test/busybox, stop grace period 1 s; `sleep` as PID 1 ignores
SIGTERM, so each old task takes the 1 s grace period to stop) is created and waited for
(not timed); then, timed from just before the command starts (the CLI process included):

    service update --image OTHER --update-parallelism 2 --update-delay 0s
                   --update-order stop-first [--update-monitor M] NAME

polled every 0.1 s through the side's API until (a) 20 tasks with desired state running
are RUNNING with the new spec ("all new running"), and (b) the service's update status
is `completed` (Docker: `UpdateStatus.State` of the service, as `docker service inspect`
shows it; swarmpy: `update_status.state` of GET /v1/services/NAME, what `swarmpy service
inspect` prints).  The failure action is the default on both (pause), and so is the
monitor unless --monitor is given (5 s on both).  The service is then removed and the
script waits until its containers are gone (not timed).

OTHER (--change image, the default) is a second image, `swarmpy-bench/busybox:v2`,
imported here from the same busybox binary if missing (removed at the end if this run
made it): the same content, but its own image id.  Docker gets both images by id
(`sha256:...`, with --no-resolve-image), because swarm's executor tries a registry pull
for any image named by tag, and a second tag of the same image would have the same id,
which is no change at all; swarmpy gets them by tag (SWARMPY_NO_PULL=1).  With
--change env the update is `--env-add BENCH_UPDATE=<round>` on both sides instead.

Docker: `docker swarm init --advertise-addr 127.0.0.1` if the engine is not in a swarm
(left at the end only then); `docker service create/update --detach`.  swarmpy: a
one-node cluster (`swarmpy init` on its own socket, data dir and ports under
/tmp/bench-ru-*, SWARMPY_NO_PULL=1), CLI `python -m swarmpy -H unix://...` (its update
returns at once).  --command trap runs `sh -c "trap 'exit 0' TERM; sleep 3600 & wait"`
instead of sleep, so that an old task stops at once.

Other test runs: as in stack_deploy.py, each measurement waits for a quiet machine and is
taken again when another test run shared it (--quiet-wait, --attempts).

Nothing is pulled.  Everything the script makes is removed on exit, error, Ctrl-C or
SIGTERM.  Exit status 2 if the goal (swarmpy <= 1.0 x Docker, medians of "all new
running") is missed, 1 if a side did not finish.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import common  # noqa: F401  (puts the repository on sys.path)
from clusters import Cleanup, default_json
from common import REPO, machine, median, table, write_json
from converge import CpuMeter, ensure_image
from stack_deploy import (RUNNING, DockerSwarm, add_quiet_options, conditions, disturbed, log, others_testing,
                          sp_env, swarmpy_cli, swarmpy_node, wait_containers_gone, wait_quiet)

import docker

from swarmpy.cli.client import Client
from swarmpy.localengine import build_busybox_image, find_busybox

IMAGE = "swarmpy-test/busybox:latest"
IMAGE2 = "swarmpy-bench/busybox:v2"
COMMANDS = {"sleep": ["sleep", "3600"],
            # exits at once on SIGTERM, so an old task stops without using its grace period
            "trap": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}
POLL_S = 0.1
GOAL_RATIO = 1.0


def ensure_second_image(client: docker.DockerClient, cleanup: Cleanup) -> str:
    try:
        return client.api.inspect_image(IMAGE2)["Id"]
    except docker.errors.ImageNotFound:
        pass
    busybox = find_busybox()
    if busybox is None:
        raise RuntimeError("no busybox binary found; install busybox-static")
    build_busybox_image(client, IMAGE2, busybox)
    image_id = client.api.inspect_image(IMAGE2)["Id"]
    log(f"imported {IMAGE2} ({image_id[:19]}); removed at the end")
    cleanup.add(f"image {IMAGE2}", lambda: client.api.remove_image(IMAGE2))
    return image_id


def engine_running(client: docker.DockerClient, label: str) -> int:
    return len(client.api.containers(filters={"label": label, "status": "running"}))


def update_flags(args) -> list[str]:
    flags = ["--update-parallelism", str(args.parallelism), "--update-delay", "0s", "--update-order", "stop-first"]
    if args.monitor is not None:
        flags += ["--update-monitor", args.monitor]
    return flags


def follow(tick, t0: float, want: int, timeout: float, engine_running=None) -> dict:
    """Poll tick() -> (new spec running, all running, update state) every POLL_S from t0.
    engine_running() -> the service's containers the engine says are running (old and new:
    with stop-first, never more than the replica count)."""
    res = {"ok": False, "first_new_running_s": None, "all_new_running_s": None, "completed_s": None,
           "min_running": None, "max_containers_running": None, "states": []}
    state = None
    while time.perf_counter() - t0 < timeout:
        new, running, state = tick()
        now = time.perf_counter() - t0
        res["min_running"] = running if res["min_running"] is None else min(res["min_running"], running)
        if engine_running is not None:
            res["max_containers_running"] = max(res["max_containers_running"] or 0, engine_running())
        if state and (not res["states"] or res["states"][-1][0] != state):
            res["states"].append((state, round(now, 3)))
        if new and res["first_new_running_s"] is None:
            res["first_new_running_s"] = now
        if new >= want and res["all_new_running_s"] is None:
            res["all_new_running_s"] = now
        if state == "completed" and res["completed_s"] is None:
            res["completed_s"] = now
        if res["all_new_running_s"] is not None and res["completed_s"] is not None:
            res["ok"] = True
            break
        if state in ("paused", "rollback_started", "rollback_paused", "rollback_completed"):
            break
        time.sleep(POLL_S)
    res["final_state"] = state
    return res


class DockerSide:
    name = "docker swarm"
    key = "docker"

    def __init__(self, client: docker.DockerClient, images: tuple[str, str], args) -> None:
        self.client, self.images, self.args = client, images, args

    def create(self, name: str) -> float:
        t0 = time.perf_counter()
        subprocess.run(["docker", "service", "create", "--detach", "--no-resolve-image", "--replicas",
                        str(self.args.replicas), "--stop-grace-period", "1s", "--name", name, self.images[0]]
                       + COMMANDS[self.args.command], check=True, capture_output=True, text=True)
        api = self.client.api
        while time.perf_counter() - t0 < 180:
            tasks = api.tasks(filters={"service": name, "desired-state": "running"})
            if sum(1 for t in tasks if t["Status"]["State"] == "running") >= self.args.replicas:
                return time.perf_counter() - t0
            time.sleep(0.2)
        raise RuntimeError(f"{name}: {self.args.replicas} replicas not running after 180 s")

    def update(self, name: str, r: int) -> dict:
        api = self.client.api
        if self.args.change == "image":
            change, image, env = ["--image", self.images[1]], self.images[1], None
        else:
            env = f"BENCH_UPDATE={r}"
            change, image = ["--env-add", env], self.images[0]
        t0 = time.perf_counter()
        subprocess.run(["docker", "service", "update", "--detach", "--no-resolve-image", *change,
                        *update_flags(self.args), name], check=True, capture_output=True, text=True)
        cmd_s = time.perf_counter() - t0

        def tick():
            tasks = api.tasks(filters={"service": name, "desired-state": "running"})
            running = [t for t in tasks if t["Status"]["State"] == "running"]
            new = sum(1 for t in running if t["Spec"]["ContainerSpec"]["Image"] == image
                      and (env is None or env in (t["Spec"]["ContainerSpec"].get("Env") or [])))
            state = (api.inspect_service(name).get("UpdateStatus") or {}).get("State")
            return new, len(running), state

        res = follow(tick, t0, self.args.replicas, self.args.timeout,
                     lambda: engine_running(self.client, f"com.docker.swarm.service.name={name}"))
        res["update_cmd_s"] = cmd_s
        service = api.inspect_service(name)
        res["update_status"] = service.get("UpdateStatus") or {}
        res["update_config"] = service["Spec"].get("UpdateConfig")
        return res

    def remove(self, name: str) -> float:
        t0 = time.perf_counter()
        subprocess.run(["docker", "service", "rm", name], capture_output=True, text=True)
        wait_containers_gone(self.client, f"com.docker.swarm.service.name={name}")
        return time.perf_counter() - t0


class SwarmpySide:
    name = "swarmpy"
    key = "swarmpy"

    def __init__(self, client: docker.DockerClient, cluster, api: Client, args) -> None:
        self.client, self.cluster, self.api, self.args = client, cluster, api, args
        self.node = cluster.nodes["m1"]
        self.env = sp_env(cluster.env)

    def cli(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*swarmpy_cli(), "-H", self.node.host, *argv], capture_output=True, text=True,
                              env=self.env, cwd=REPO, check=True)

    def create(self, name: str) -> float:
        t0 = time.perf_counter()
        self.cli("service", "create", "--name", name, "--replicas", str(self.args.replicas),
                 "--stop-grace-period", "1s", IMAGE, *COMMANDS[self.args.command])
        while time.perf_counter() - t0 < 180:
            service = next((s for s in self.api.get("/services") if s["spec"]["name"] == name), None)
            if service and service["replicas_status"]["running"] >= self.args.replicas:
                return time.perf_counter() - t0
            time.sleep(0.2)
        raise RuntimeError(f"{name}: {self.args.replicas} replicas not running after 180 s")

    def update(self, name: str, r: int) -> dict:
        api = self.api
        if self.args.change == "image":
            change, image, env = ["--image", IMAGE2], IMAGE2, None
        else:
            env = f"BENCH_UPDATE={r}"
            change, image = ["--env-add", env], IMAGE
        service_id = api.get(f"/services/{name}")["id"]
        t0 = time.perf_counter()
        self.cli("service", "update", *change, *update_flags(self.args), name)
        cmd_s = time.perf_counter() - t0

        def tick():
            tasks = api.get("/tasks", service=service_id)
            running = [t for t in tasks if t["status"]["state"] == RUNNING and t["desired_state"] <= RUNNING]
            new = sum(1 for t in running if t["spec"]["image"] == image
                      and (env is None or env in (t["spec"].get("env") or [])))
            state = (api.get(f"/services/{service_id}").get("update_status") or {}).get("state")
            return new, len(running), state

        res = follow(tick, t0, self.args.replicas, self.args.timeout,
                     lambda: engine_running(self.client, f"com.swarmpy.service.name={name}"))
        res["update_cmd_s"] = cmd_s
        service = api.get(f"/services/{service_id}")
        res["update_status"] = service.get("update_status")
        res["update_config"] = service["spec"].get("update_config")
        return res

    def remove(self, name: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([*swarmpy_cli(), "-H", self.node.host, "service", "rm", name], capture_output=True,
                       text=True, env=self.env, cwd=REPO)
        wait_containers_gone(self.client, f"com.swarmpy.service.name={name}")
        return time.perf_counter() - t0


def fmt(v: float | None) -> str:
    return f"{v:.2f} s" if v is not None else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--replicas", type=int, default=20)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--change", choices=("image", "env"), default="image")
    ap.add_argument("--command", choices=tuple(COMMANDS), default="sleep",
                    help="the tasks' command: sleep 3600 (ignores SIGTERM: each stop takes the 1 s grace "
                         "period), or trap (sh exiting at once on SIGTERM)")
    ap.add_argument("--monitor", help="--update-monitor on both sides (default: each side's default, 5 s)")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds an update may take")
    add_quiet_options(ap)
    ap.add_argument("--json", help="results file (default bench/results/rolling_update-DATE.json)")
    args = ap.parse_args()
    args.json = args.json or default_json("rolling_update")

    client = docker.from_env(timeout=120)
    info = machine(docker=True)
    info["docker_cli"] = subprocess.run(["docker", "version", "--format", "{{.Client.Version}}"],
                                        capture_output=True, text=True).stdout.strip()
    info["pytest_at_start"] = others_testing()
    image_id = ensure_image(client)
    tag = str(os.getpid())
    results: dict[str, list[dict]] = {}
    discarded: list[dict] = []
    status = 0
    with Cleanup() as cleanup:
        image2_id = ensure_second_image(client, cleanup)
        swarm = DockerSwarm(client, cleanup)
        info["docker_swarm_state_before"] = swarm.state_before
        cluster, api, daemon_pid = swarmpy_node(cleanup, "ru")
        sides = [DockerSide(client, (image_id, image2_id), args), SwarmpySide(client, cluster, api, args)]
        results = {s.key: [] for s in sides}
        for r in range(1, args.rounds + 1):
            for side in (sides if r % 2 else sides[::-1]):
                name = f"spbru-{side.key}-{tag}-{r}"
                for attempt in range(1, args.attempts + 1):
                    waited = wait_quiet(args.quiet_wait) if args.quiet_wait else 0.0
                    cleanup.add(f"service {name}", lambda side=side, name=name: side.remove(name))
                    create_s = side.create(name)
                    time.sleep(1.0)
                    before = conditions(client, name)
                    meter = CpuMeter(daemon_pid)
                    res = side.update(name, r)
                    res["cpu_s"] = meter.stop()
                    res.update(round=r, name=name, attempt=attempt, create_s=create_s,
                               waited_for_quiet_s=round(waited, 1), **before)
                    cleanup.steps.pop()
                    res["cleanup_s"] = side.remove(name)
                    res["pytest_after"] = others_testing()
                    res["disturbed"] = disturbed(before, res)
                    log(f"round {r} {side.name:13s} all new running {fmt(res['all_new_running_s'])}, completed "
                        f"{fmt(res['completed_s'])} (first new {fmt(res['first_new_running_s'])}, min running "
                        f"{res['min_running']}, max containers {res['max_containers_running']}, final state "
                        f"{res['final_state']}; load {before['loadavg'][0]}, {before['foreign_running']} other "
                        f"containers{', DISTURBED: ' + '; '.join(res['disturbed']) if res['disturbed'] else ''})")
                    log(f"    CPU seconds: {res['cpu_s']}")
                    if res["disturbed"] and attempt < args.attempts:
                        discarded.append(res)
                        log("    discarded (another test run shared the machine): measuring again")
                        continue
                    break
                results[side.key].append(res)
                if not res["ok"]:
                    status = 1

    def med(key: str, field: str) -> float | None:
        return median([x[field] for x in results[key] if x[field] is not None])

    meds = {k: {f: med(k, f) for f in ("all_new_running_s", "completed_s", "first_new_running_s")}
            for k in results}
    rows = []
    for key, runs in results.items():
        rows.append([key, " ".join(f"{x['all_new_running_s']:.2f}" if x["all_new_running_s"] else "fail" for x in runs),
                     f"{meds[key]['all_new_running_s']:.2f}" if meds[key]["all_new_running_s"] else "-",
                     " ".join(f"{x['completed_s']:.2f}" if x["completed_s"] else "-" for x in runs),
                     f"{meds[key]['completed_s']:.2f}" if meds[key]["completed_s"] else "-"])
    print()
    print(f"rolling update of {args.replicas} replicas ({args.change}, parallelism {args.parallelism}, delay 0, "
          f"stop-first, monitor {args.monitor or 'default'}, command {args.command}), {args.rounds} rounds; seconds from the update command")
    print(table(["side", "all new running (s)", "median", "completed (s)", "median"], rows))
    ratio = ratio_completed = None
    if meds.get("swarmpy", {}).get("all_new_running_s") and meds.get("docker", {}).get("all_new_running_s"):
        ratio = meds["swarmpy"]["all_new_running_s"] / meds["docker"]["all_new_running_s"]
        print(f"\nswarmpy / docker, all new running = {ratio:.2f} "
              f"(goal <= {GOAL_RATIO}: {'met' if ratio <= GOAL_RATIO else 'NOT met'})")
    if meds.get("swarmpy", {}).get("completed_s") and meds.get("docker", {}).get("completed_s"):
        ratio_completed = meds["swarmpy"]["completed_s"] / meds["docker"]["completed_s"]
        print(f"swarmpy / docker, update completed = {ratio_completed:.2f}")
    info["docker_swarm_state_after"] = client.info().get("Swarm", {}).get("LocalNodeState")
    write_json(args.json, {"benchmark": "rolling_update", "machine": info,
                           "params": {"rounds": args.rounds, "replicas": args.replicas, "change": args.change,
                                      "parallelism": args.parallelism, "delay": "0s",
                                      "command": COMMANDS[args.command], "order": "stop-first",
                                      "monitor": args.monitor or "default (5 s on both)", "poll_s": POLL_S,
                                      "images": {"old": [IMAGE, image_id], "new": [IMAGE2, image2_id]},
                                      "update_flags": update_flags(args)},
                           "results": results, "discarded": discarded, "medians": meds, "ratio_all_new_running": ratio,
                           "ratio_completed": ratio_completed, "goal_ratio": GOAL_RATIO,
                           "goal_met": ratio is not None and ratio <= GOAL_RATIO})
    if status:
        return status
    return 0 if ratio is None or ratio <= GOAL_RATIO else 2


if __name__ == "__main__":
    sys.exit(main())
