"""Docker's own swarm mode on a test host (tests/netns.py), for side-by-side tests with swarmpy.

One namespace host has an engine of its own; `DockerSwarm` runs the real docker CLI *inside*
that namespace against that engine only (as tests/stacks/record_golden.py does): `docker swarm
init` there, `docker stack deploy --resolve-image never`, nothing pulled (the namespace has no
route out; the test image is imported by the harness and tagged locally).  The machine's main
engine is never touched.  Teardown of the host (processes by pid, namespace, dirs) is the
harness's; `leave()` only leaves the swarm.

The CLI: $SWARMPY_DOCKER_CLI, else /usr/bin/docker (Debian's docker.io, CLI 20.10, what CI
installs), else the `docker` on PATH.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_cli() -> str | None:
    """The docker CLI to use, or None when there is none with `stack deploy`."""
    for cli in (os.environ.get("SWARMPY_DOCKER_CLI"), "/usr/bin/docker", shutil.which("docker")):
        if not cli or not os.path.exists(cli):
            continue
        res = subprocess.run([cli, "stack", "deploy", "--help"], capture_output=True, text=True)
        if res.returncode == 0 and "--resolve-image" in res.stdout:
            return cli
    return None


@dataclass
class Task:
    id: str
    name: str             # docker's task name: SERVICE.SLOT (replicated) or SERVICE.NODE_ID (global)
    service: str
    state: str            # CurrentState, e.g. "Running 3 seconds ago"


class DockerSwarm:
    """A one-node Docker swarm on `host`; every docker command runs inside its namespace."""

    def __init__(self, host, cli: str, docker_config: str, env: dict[str, str] | None = None) -> None:
        self.host = host
        self.cli = cli
        # Only what the CLI needs and the interpolation variables given: nothing of ours leaks in.
        self.env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                    "DOCKER_CONFIG": docker_config, "DOCKER_HOST": host.docker_host, **(env or {})}
        self.client = host.docker()
        self.node_id = ""

    # -- the CLI, inside the namespace
    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        res = self.host.run([self.cli, *args], env=self.env, capture_output=True, text=True,
                            cwd=str(REPO), timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({res.returncode}):\n"
                               f"{res.stdout.strip()}\n{res.stderr.strip()}")
        return res

    def no_route_out(self) -> str:
        """The namespace's routes; raises if it has a default route (it must reach nothing)."""
        routes = self.host.run(["ip", "route", "show"], capture_output=True, text=True).stdout
        if any(line.startswith("default") for line in routes.splitlines()):
            raise RuntimeError(f"the namespace {self.host.netns} has a default route:\n{routes}")
        return routes

    def version(self) -> str:
        fmt = "CLI {{.Client.Version}}, engine {{.Server.Version}}"
        return self.docker("version", "--format", fmt).stdout.strip()

    def init(self) -> None:
        self.docker("swarm", "init", "--advertise-addr", self.host.addr)
        self.node_id = self.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()

    def tag_image(self, source: str, ref: str) -> None:
        """Tag the imported `source` image as `ref` (what the stack names), if it differs."""
        if source == ref:
            return
        slash, colon = ref.rfind("/"), ref.rfind(":")
        repo, tag = (ref[:colon], ref[colon + 1:]) if colon > slash else (ref, "latest")
        self.client.images.get(source).tag(repo, tag)

    def leave(self) -> None:
        self.docker("swarm", "leave", "--force", check=False)

    # -- stacks
    def deploy(self, compose: str, stack: str, timeout: float = 120) -> str:
        res = self.docker("stack", "deploy", "--resolve-image", "never", "-c", compose, stack, timeout=timeout)
        return res.stdout + res.stderr

    def listing(self, stack: str) -> dict[str, dict[str, str]]:
        """`docker stack services STACK`: name -> {mode, replicas, image}."""
        fmt = "{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}"
        out = self.docker("stack", "services", stack, "--format", fmt).stdout
        rows = [line.split("\t") for line in out.splitlines() if line.strip()]
        return {r[0]: {"mode": r[1], "replicas": r[2], "image": r[3]} for r in rows}

    def tasks(self, stack: str) -> list[Task]:
        """The stack's tasks meant to run (`docker stack ps --filter desired-state=running`)."""
        fmt = "{{.ID}}\t{{.Name}}\t{{.CurrentState}}"
        out = self.docker("stack", "ps", stack, "--no-trunc", "--filter", "desired-state=running",
                          "--format", fmt).stdout
        tasks = []
        for line in out.splitlines():
            if line.strip():
                tid, name, state = line.split("\t")
                tasks.append(Task(tid, name, name.split(".")[0], state))
        return tasks

    def services(self, stack: str) -> dict[str, dict]:
        """name -> the engine's service object (`docker service inspect`)."""
        api = self.client.api
        found = api.services(filters={"label": f"com.docker.stack.namespace={stack}"})
        return {s["Spec"]["Name"]: s for s in found}

    def wait_converged(self, stack: str, timeout: float = 60) -> dict[str, dict[str, str]]:
        """Until every service of the stack shows n/n replicas (n > 0) and a running task each:
        with a healthcheck a task is running only once healthy (SwarmKit)."""
        deadline = time.monotonic() + timeout
        while True:
            listing = self.listing(stack)
            counts = [r["replicas"].split()[0].split("/") for r in listing.values()]
            done = bool(listing) and all(a == b and a != "0" for a, b in counts)
            if done:
                running = [t for t in self.tasks(stack) if t.state.startswith("Running")]
                if len(running) == sum(int(a) for a, _ in counts):
                    return listing
            if time.monotonic() > deadline:
                ps = self.docker("stack", "ps", stack, "--no-trunc", check=False).stdout
                raise AssertionError(f"docker's stack {stack} did not converge in {timeout:.0f}s:\n"
                                     f"{listing}\n{ps}")
            time.sleep(0.3)

    def remove_stack(self, stack: str, timeout: float = 30) -> None:
        self.docker("stack", "rm", stack, check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.client.api.containers(all=True, filters={"label": f"com.docker.stack.namespace={stack}"}):
                return
            time.sleep(0.3)

    # -- the engine
    def containers(self, stack: str) -> list[dict]:
        """`docker inspect` of the stack's running containers."""
        api = self.client.api
        found = api.containers(filters={"label": f"com.docker.stack.namespace={stack}", "status": "running"})
        return [api.inspect_container(c["Id"]) for c in found]

    def exec(self, container_id: str, argv: list[str]) -> tuple[int, str]:
        return exec_in(self.client, container_id, argv)


def exec_in(client, container_id: str, argv: list[str]) -> tuple[int, str]:
    """Run argv in a container with a docker SDK client: (exit code, output)."""
    res = client.containers.get(container_id).exec_run(argv, demux=False)
    return res.exit_code, (res.output or b"").decode(errors="replace")
