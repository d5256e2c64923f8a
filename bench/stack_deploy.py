"""Time from `stack deploy` of the repository's docker-compose.test.yml until the stack has
converged (every service's tasks RUNNING; `web` has a healthcheck, and a task with a
healthcheck is RUNNING only once healthy, on both sides): swarmpy against Docker's own
swarm mode on the same engine.

    python bench/stack_deploy.py [--rounds 5] [--docker-cli-wait] [--json FILE]

Each round runs both sides, alternating which goes first (round 1: Docker, round 2:
swarmpy, ...).  Every side is timed from just before its deploy command starts (the CLI
process is part of the time) until a poll every 0.1 s, through the side's API, sees every
service of the stack with all its replicas RUNNING (`web`: 2; `agent`, global: one per
node, 1 here).  After each measurement the stack is removed and the script waits until
its containers are gone, then removes its volume (NAME_data) and, on Docker, its network
(NAME_default); not timed, shown for information.

Docker: `docker swarm init --advertise-addr 127.0.0.1` if the engine is not in a swarm
(and `docker swarm leave --force` at the end only then), then
`TEST_IMAGE=sha256:<id> docker stack deploy --resolve-image never -c docker-compose.test.yml
NAME` (CLI 28.x, which exits at once by default: --detach=true), polled through the Engine
API.  The file reads its image from ${TEST_IMAGE}, so no copy of it is needed: the image
is given by its id, for which swarm's executor never tries a pull.  With
--docker-cli-wait a third side is timed: `docker stack deploy --detach=false`, until the
CLI exits (it waits for each service in turn and for docker's 5 s stability check).

swarmpy: a one-node cluster (`swarmpy init` on its own socket, data dir and ports under
/tmp/bench-sd-*, SWARMPY_NO_PULL=1), then `TEST_IMAGE=swarmpy-test/busybox python -m swarmpy
-H unix://... stack deploy -c docker-compose.test.yml --detach=false NAME` (the checkout's
code, not an installed entry point), polled through the HTTP API (GET /v1/tasks) while the
CLI waits; the time the CLI exits (after it printed `verify: Service ... converged` for
both services) is recorded too.

Other test runs: before each measurement the script waits until no pytest process has
been seen for 15 s (--quiet-wait), and measures again (up to --attempts times) when a
pytest process or another busy swarmpy daemon shared the machine; the discarded
measurements are kept in the JSON (`discarded`).

Nothing is pulled; everything listens on 127.0.0.1 or a unix socket.  Everything the
script makes is removed on exit, error, Ctrl-C or SIGTERM.  Exit status 2 if the goal
(swarmpy <= 1.0 x Docker, medians) is missed, 1 if a side did not converge.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import common  # noqa: F401  (puts the repository on sys.path)
from clusters import Cleanup, SwarmpyCluster, default_json
from common import REPO, loadavg, machine, median, table, write_json
from converge import CpuMeter, ensure_image, foreign_containers

import docker

from swarmpy.cli.client import Client

IMAGE = "swarmpy-test/busybox:latest"
STACK_FILE = os.path.join(REPO, "docker-compose.test.yml")
NAMESPACE = "com.docker.stack.namespace"
POLL_S = 0.1
GOAL_RATIO = 1.0
RUNNING = 512                       # swarmpy.models.TaskState.RUNNING


def swarmpy_cli() -> list[str]:
    """`python -m swarmpy` from this checkout.  (Not the installed entry point: an editable
    install may point at another checkout.)  Run with cwd=REPO and PYTHONPATH=REPO."""
    return [sys.executable, "-m", "swarmpy"]


def sp_env(base: dict, **extra: str) -> dict:
    return dict(base, PYTHONPATH=REPO + (os.pathsep + base["PYTHONPATH"] if base.get("PYTHONPATH") else ""),
                **extra)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def others_testing() -> list[str]:
    """Command lines of running pytest processes (another engineer's test run)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            # pytest itself (`pytest ...`, `python -m pytest ...`, `timeout N python -m pytest`),
            # not a process that merely has a pytest tmp dir in its arguments
            if any("pytest" in a for a in argv[:5] if not a.startswith("/tmp/")):
                found.append(f"{entry}: {' '.join(argv)[:100]}")
    return found


def add_quiet_options(ap: argparse.ArgumentParser) -> None:
    """--quiet-wait and --attempts: how a benchmark keeps other test runs out of its figures."""
    ap.add_argument("--quiet-wait", type=float, default=1800.0,
                    help="before each measurement, wait up to this many seconds until no pytest process "
                         "has run for 15 s (0: do not wait)")
    ap.add_argument("--attempts", type=int, default=3,
                    help="measure again, up to this many times, when another test run shared the machine")


def wait_quiet(limit_s: float, settle_s: float = 15.0) -> float:
    """Wait until no pytest process has been seen for settle_s (polled every 5 s), at most
    limit_s; returns the seconds waited."""
    t0 = time.monotonic()
    quiet_since = None
    announced = False
    while time.monotonic() - t0 < limit_s:
        if others_testing():
            quiet_since = None
            if not announced:
                log("another test run is going on: waiting for it to end")
                announced = True
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle_s:
            break
        time.sleep(5 if quiet_since is None else 1)
    return time.monotonic() - t0


def disturbed(before: dict, res: dict) -> list[str]:
    """Why a measurement was taken with someone else's work on the machine, if it was: a
    pytest process at its start or end, or another busy test daemon or pytest during it."""
    why = []
    if before.get("pytest") or res.get("pytest_after"):
        why.append("pytest running")
    for comm, cpu in (res.get("cpu_s", {}).get("others") or {}).items():
        if ("pytest" in comm or "swarmpy daemon" in comm) and cpu >= 0.2:
            why.append(f"{comm}: {cpu} CPU s")
    return why


def conditions(client: docker.DockerClient, own: str) -> dict:
    return {"loadavg": loadavg(), "foreign_running": foreign_containers(client, own),
            "pytest": others_testing()}


def wait_containers_gone(client: docker.DockerClient, label: str, timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if not client.api.containers(all=True, filters={"label": label}):
            return time.perf_counter() - t0
        time.sleep(0.2)
    raise RuntimeError(f"containers labelled {label} still there after {timeout:.0f} s")


def remove_volume(client: docker.DockerClient, name: str) -> None:
    for _ in range(50):
        try:
            client.api.remove_volume(name)
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:      # still in use for a moment after the containers went
            time.sleep(0.2)
    client.api.remove_volume(name, force=True)


class DockerSwarm:
    """The engine's own swarm mode: joined with `swarm init` only if it was inactive."""

    def __init__(self, client: docker.DockerClient, cleanup: Cleanup) -> None:
        self.client = client
        state = client.info().get("Swarm", {}).get("LocalNodeState")
        self.state_before = state
        had_gwbridge = bool(client.api.networks(names=["docker_gwbridge"]))
        if state == "inactive":
            subprocess.run(["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
                           check=True, capture_output=True, text=True)
            log("docker swarm initialised (will leave at the end)")

            def leave() -> None:
                subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, text=True)
                if not had_gwbridge:        # `swarm init` made it and `swarm leave` keeps it
                    subprocess.run(["docker", "network", "rm", "docker_gwbridge"], capture_output=True, text=True)
                log("left the docker swarm")
            cleanup.add("docker swarm leave", leave)
        elif state != "active":
            raise RuntimeError(f"the engine's swarm state is {state!r}; expected inactive or active")
        else:
            log("engine already in a swarm: using it, and leaving it as it is")

    def node_count(self) -> int:
        return sum(1 for n in self.client.api.nodes() if n["Status"]["State"] == "ready"
                   and n["Spec"].get("Availability") == "active")


def swarmpy_node(cleanup: Cleanup, prefix: str) -> tuple[SwarmpyCluster, Client, int]:
    """A one-node swarmpy cluster (SWARMPY_NO_PULL=1), ready for tasks."""
    cluster = SwarmpyCluster(prefix, cleanup)
    node = cluster.init("m1")
    api = node.client(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = api.get("/nodes")
        if nodes and nodes[0].get("status", {}).get("state") == "ready":
            break
        time.sleep(0.1)
    log(f"swarmpy node up on 127.0.0.1:{node.port} ({node.data_dir}), daemon pid {node.pid}")
    return cluster, api, node.pid


# -- the two sides -----------------------------------------------------------------------------------
class DockerSide:
    name = "docker swarm"
    key = "docker"

    def __init__(self, client: docker.DockerClient, swarm: DockerSwarm, image_id: str,
                 cli_wait: bool = False) -> None:
        self.client, self.swarm, self.image_id, self.cli_wait = client, swarm, image_id, cli_wait
        if cli_wait:
            self.name, self.key = "docker swarm, --detach=false", "docker_cli"

    def deploy(self, stack: str, timeout: float) -> dict:
        env = dict(os.environ, TEST_IMAGE=self.image_id)
        cmd = ["docker", "stack", "deploy", "--resolve-image", "never", "-c", STACK_FILE]
        cmd += ["--detach=false"] if self.cli_wait else []
        want_global = self.swarm.node_count()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd + [stack], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, cwd=REPO)
        api = self.client.api

        def converged() -> bool:
            services = api.services(filters={"label": f"{NAMESPACE}={stack}"})
            if len(services) < 2:
                return False
            for s in services:
                mode = s["Spec"]["Mode"]
                want = mode["Replicated"]["Replicas"] if "Replicated" in mode else want_global
                tasks = api.tasks(filters={"service": s["ID"], "desired-state": "running"})
                if sum(1 for t in tasks if t["Status"]["State"] == "running") < want:
                    return False
            return True

        result = poll(converged, proc, t0, timeout, wait_cli=self.cli_wait)
        return result

    def remove(self, stack: str) -> float:
        t0 = time.perf_counter()
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, text=True)
        wait_containers_gone(self.client, f"{NAMESPACE}={stack}")
        for _ in range(50):
            nets = self.client.api.networks(names=[f"{stack}_default"])
            if not nets:
                break
            try:
                self.client.api.remove_network(nets[0]["Id"])
            except docker.errors.APIError:
                time.sleep(0.2)
        remove_volume(self.client, f"{stack}_data")
        return time.perf_counter() - t0


class SwarmpySide:
    name = "swarmpy"
    key = "swarmpy"

    def __init__(self, client: docker.DockerClient, cluster: SwarmpyCluster, api: Client) -> None:
        self.client, self.cluster, self.api = client, cluster, api
        self.node = cluster.nodes["m1"]

    def deploy(self, stack: str, timeout: float) -> dict:
        env = sp_env(self.cluster.env, TEST_IMAGE=IMAGE.split(":")[0])
        cmd = [*swarmpy_cli(), "-H", self.node.host, "stack", "deploy", "-c", STACK_FILE, "--detach=false", stack]
        api = self.api
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)

        def converged() -> bool:
            services = [s for s in api.get("/services") if s["spec"]["labels"].get(NAMESPACE) == stack]
            if len(services) < 2:
                return False
            nodes = sum(1 for n in api.get("/nodes") if n.get("status", {}).get("state") == "ready"
                        and n.get("spec", {}).get("availability", "active") == "active")
            for s in services:
                want = nodes if s["spec"].get("mode") == "global" else s["spec"]["replicas"]
                tasks = api.get("/tasks", service=s["id"])
                if sum(1 for t in tasks if t["status"]["state"] == RUNNING and t["desired_state"] <= RUNNING) < want:
                    return False
            return True

        result = poll(converged, proc, t0, timeout, wait_cli=True)
        out = result.get("cli_stdout", "")
        result["cli_verified"] = all(f"verify: Service {stack}_{s} converged" in out for s in ("web", "agent"))
        return result

    def remove(self, stack: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([*swarmpy_cli(), "-H", self.node.host, "stack", "rm", stack], capture_output=True,
                       text=True, env=sp_env(self.cluster.env), cwd=REPO)
        wait_containers_gone(self.client, f"{NAMESPACE}={stack}")
        remove_volume(self.client, f"{stack}_data")
        return time.perf_counter() - t0


def poll(converged, proc: subprocess.Popen, t0: float, timeout: float, wait_cli: bool) -> dict:
    """Poll `converged` every POLL_S from t0; also note when the deploy command exited.
    With wait_cli the result's `seconds` is when the command exited (after it converged)."""
    result = {"ok": False, "seconds": None, "converged_s": None, "cli_exit_s": None}
    while time.perf_counter() - t0 < timeout:
        if result["cli_exit_s"] is None and proc.poll() is not None:
            result["cli_exit_s"] = time.perf_counter() - t0
            if proc.returncode != 0:
                break
        if result["converged_s"] is None and converged():
            result["converged_s"] = time.perf_counter() - t0
        if result["converged_s"] is not None and (result["cli_exit_s"] is not None or not wait_cli):
            break
        time.sleep(POLL_S if result["converged_s"] is None else 0.01)
    if proc.poll() is None and not wait_cli:
        proc.wait(30)
        result["cli_exit_s"] = time.perf_counter() - t0
    elif proc.poll() is None:
        proc.kill()
    out, err = proc.communicate()
    result.update(cli_rc=proc.returncode, cli_stdout=out[-3000:], cli_stderr=err[-3000:])
    result["ok"] = result["converged_s"] is not None and proc.returncode == 0
    result["seconds"] = result["converged_s"]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a deploy may take to converge")
    ap.add_argument("--docker-cli-wait", action="store_true",
                    help="also time `docker stack deploy --detach=false` until the CLI exits")
    add_quiet_options(ap)
    ap.add_argument("--json", help="results file (default bench/results/stack_deploy-DATE.json)")
    args = ap.parse_args()
    args.json = args.json or default_json("stack_deploy")

    client = docker.from_env(timeout=120)
    info = machine(docker=True)
    info["docker_cli"] = subprocess.run(["docker", "version", "--format", "{{.Client.Version}}"],
                                        capture_output=True, text=True).stdout.strip()
    info["docker_cli_path"] = subprocess.run(["sh", "-c", "command -v docker"], capture_output=True,
                                             text=True).stdout.strip()
    info["pytest_at_start"] = others_testing()
    image_id = ensure_image(client)
    tag = str(os.getpid())
    results: dict[str, list[dict]] = {}
    discarded: list[dict] = []
    status = 0
    with Cleanup() as cleanup:
        swarm = DockerSwarm(client, cleanup)
        info["docker_swarm_state_before"] = swarm.state_before
        cluster, api, daemon_pid = swarmpy_node(cleanup, "sd")
        sides = [DockerSide(client, swarm, image_id), SwarmpySide(client, cluster, api)]
        if args.docker_cli_wait:
            sides.append(DockerSide(client, swarm, image_id, cli_wait=True))
        results = {s.key: [] for s in sides}
        for r in range(1, args.rounds + 1):
            order = sides if r % 2 else [sides[1], sides[0]] + sides[2:]
            for side in order:
                stack = f"spb{side.key[0]}{side.key[-1]}{tag}r{r}"
                for attempt in range(1, args.attempts + 1):
                    waited = wait_quiet(args.quiet_wait) if args.quiet_wait else 0.0
                    before = conditions(client, stack)
                    meter = CpuMeter(daemon_pid)
                    cleanup.add(f"stack {stack}", lambda side=side, stack=stack: side.remove(stack))
                    res = side.deploy(stack, args.timeout)
                    res["cpu_s"] = meter.stop()
                    res.update(round=r, stack=stack, attempt=attempt, waited_for_quiet_s=round(waited, 1), **before)
                    cleanup.steps.pop()
                    res["cleanup_s"] = side.remove(stack)
                    res["pytest_after"] = others_testing()
                    res["disturbed"] = disturbed(before, res)
                    if res["ok"]:
                        shown = f"converged {res['converged_s']:.2f} s, CLI exited {res['cli_exit_s']:.2f} s"
                    else:
                        shown = f"NOT converged (rc {res['cli_rc']}: {res['cli_stderr'].strip()[-300:]})"
                    log(f"round {r} {side.name:28s} {shown}  (cleanup {res['cleanup_s']:.1f} s, load "
                        f"{before['loadavg'][0]}, {before['foreign_running']} other containers"
                        f"{', DISTURBED: ' + '; '.join(res['disturbed']) if res['disturbed'] else ''})")
                    log(f"    CPU seconds: {res['cpu_s']}")
                    if res["disturbed"] and attempt < args.attempts:
                        discarded.append(res)
                        log("    discarded (another test run shared the machine): measuring again")
                        continue
                    break
                results[side.key].append(res)
                if not res["ok"]:
                    status = 1

    med = {k: median([x["converged_s"] for x in v if x["ok"]]) for k, v in results.items()}
    med_cli = {k: median([x["cli_exit_s"] for x in v if x["ok"]]) for k, v in results.items()}
    rows = []
    for key, runs in results.items():
        rows.append([key, " ".join(f"{x['converged_s']:.2f}" if x["ok"] else "fail" for x in runs),
                     f"{med[key]:.2f}" if med[key] else "-",
                     " ".join(f"{x['cli_exit_s']:.2f}" if x.get("cli_exit_s") else "-" for x in runs),
                     f"{med_cli[key]:.2f}" if med_cli[key] else "-"])
    print()
    print(f"stack deploy of docker-compose.test.yml, {args.rounds} rounds; seconds from deploy until converged "
          f"(poll), and until the deploy command exited")
    print(table(["side", "converged (s)", "median", "CLI exited (s)", "median"], rows))
    ratio = med["swarmpy"] / med["docker"] if med.get("swarmpy") and med.get("docker") else None
    if ratio is not None:
        print(f"\nswarmpy / docker = {ratio:.2f} (goal <= {GOAL_RATIO}: {'met' if ratio <= GOAL_RATIO else 'NOT met'})")
    extra = {}
    if med_cli.get("swarmpy") and med.get("docker"):
        extra["ratio_swarmpy_cli_exit_to_docker_converged"] = med_cli["swarmpy"] / med["docker"]
        print(f"swarmpy (its --detach=false CLI exiting) / docker (converged) = "
              f"{extra['ratio_swarmpy_cli_exit_to_docker_converged']:.2f}")
    if med_cli.get("swarmpy") and med_cli.get("docker_cli"):
        extra["ratio_cli_exit_both_detach_false"] = med_cli["swarmpy"] / med_cli["docker_cli"]
        print(f"swarmpy / docker, both --detach=false until the CLI exits = "
              f"{extra['ratio_cli_exit_both_detach_false']:.2f}")
    info["docker_swarm_state_after"] = client.info().get("Swarm", {}).get("LocalNodeState")
    write_json(args.json, {"benchmark": "stack_deploy", "machine": info,
                           "params": {"rounds": args.rounds, "poll_s": POLL_S, "stack_file": "docker-compose.test.yml",
                                      "image": IMAGE, "image_id": image_id, "sides": list(results)},
                           "results": results, "discarded": discarded, "median_converged_s": med, "median_cli_exit_s": med_cli,
                           "ratio_swarmpy_docker": ratio, **extra, "goal_ratio": GOAL_RATIO,
                           "goal_met": ratio is not None and ratio <= GOAL_RATIO})
    if status:
        return status
    return 0 if ratio is None or ratio <= GOAL_RATIO else 2


if __name__ == "__main__":
    sys.exit(main())
