"""One task controller per assigned task: drives its container through SwarmKit's
states (accepted, preparing, ready, starting, running) towards what the manager
desires, and reports each step.  A container found on start-up is adopted."""
from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Callable

from docker.errors import DockerException

from swarmpy import defaults
from swarmpy.models import TaskState as S
from worker import dockerargs, taskfiles, templates
from worker.engine import (ImageUnavailable, LABEL_NODE, LABEL_SERVICE_ID, LABEL_SERVICE_NAME,
                           LABEL_SLOT, LABEL_TASK)
from worker.network.overlay import NetworkError
from worker.resources import GPU_KIND

if TYPE_CHECKING:
    from worker.agent import Agent

UNHEALTHY = "container unhealthy"
# `docker ps` status of a container with a healthcheck: "Up 3 seconds (health: starting)"
_LISTED_HEALTH = re.compile(r"\((?:health: )?(starting|healthy|unhealthy)\)")


def container_name(task: dict) -> str:
    suffix = task["slot"] if task.get("slot") is not None else task["node_id"]
    return f"{task['service_name']}.{suffix}.{task['id']}"


def resource_env(assigned_generic: dict) -> list[str]:
    """DOCKER_RESOURCE_<KIND>=ids, as swarm passes generic resources to containers."""
    env = []
    for kind, value in sorted(assigned_generic.items()):
        name = "DOCKER_RESOURCE_" + kind.upper().replace("-", "_")
        env.append(f"{name}={','.join(value) if isinstance(value, list) else value}")
    return env


class TaskController:
    def __init__(self, agent: "Agent", task: dict, container: dict | None) -> None:
        self.agent = agent
        self.task = task
        self.state = S(task["state"])
        self.container_id = ""
        self.stopping = False
        self._changed = asyncio.Event()
        self._changed.set()
        self._health: asyncio.Task | None = None     # follows a started container's healthcheck
        self._unwatch: Callable[[], None] | None = None
        if container is not None:
            self._adopt(container)
        self._runner = asyncio.create_task(self._run(), name=f"task-{task['id'][:12]}")

    @property
    def id(self) -> str:
        return self.task["id"]

    def _adopt(self, container: dict) -> None:
        self.container_id = container["Id"]
        if self.state > S.RUNNING:
            return
        if container.get("State") == "running":
            if self.network_ids:
                self.agent.spawn(self._join_rotation())
            listed = _LISTED_HEALTH.search(container.get("Status", ""))
            waiting = listed is not None and listed.group(1) == "starting" and self.state < S.RUNNING
            self._report(S.STARTING if waiting else S.RUNNING, "starting" if waiting else "started")
            if listed is not None:
                self._watch_health(first=listed.group(1))
        elif container.get("State") in ("exited", "dead"):
            self.state = S.RUNNING          # it ran while we were away; _check_exit reports how it ended
            self.agent.spawn(self._check_exit())
        else:
            self._report(S.READY, "prepared")

    # -- inputs --------------------------------------------------------------------
    def update(self, task: dict) -> None:
        self.task = task
        self._changed.set()

    def exited(self, exit_code: int | None) -> None:
        # A started container still waiting to be healthy is STARTING: its exit counts too.
        started = self.state == S.RUNNING or (self.state == S.STARTING and self._health is not None)
        if not started or self.stopping:
            return
        if exit_code == 0:
            self._report(S.COMPLETE, "finished", exit_code=0)
        else:
            err = f"task: non-zero exit ({exit_code})"
            self._report(S.FAILED, err, err=err, exit_code=exit_code)

    async def remove(self) -> None:
        self._stop_health()
        self.agent.overlays.container_gone(self.id)
        self._runner.cancel()
        await asyncio.gather(self._runner, return_exceptions=True)
        if self.container_id:
            await self.agent.engine.call(self.agent.engine.remove, self.container_id)
        taskfiles.remove(self.agent.node_id, self.id)

    # -- the state machine ---------------------------------------------------------
    def _report(self, state: S, message: str, err: str = "", exit_code: int | None = None) -> None:
        self.state = state
        self.agent.report(self.id, state, message, err, self.container_id, exit_code)

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._step()
            except (ImageUnavailable, taskfiles.MissingFile, templates.TemplateError, NetworkError) as exc:
                self._report(S.REJECTED, "preparing failed", err=str(exc))
            except DockerException as exc:
                self._stop_health()
                failed = S.REJECTED if self.state < S.READY else S.FAILED
                self._report(failed, f"{self.state.label} failed", err=str(exc))

    async def _step(self) -> None:
        desired, engine = self.task["desired_state"], self.agent.engine
        # A task held at READY for its restart delay waits; even its image check waits, so a
        # task that keeps failing to prepare is retried at the restart delay, not in a loop.
        # One held until the task it replaces has stopped (stop-first) is prepared at once,
        # so that it only has to start when its turn comes (as SwarmKit's agent does).
        if desired == S.READY and self.task.get("start_after") and self.state < S.READY:
            await self._prepare()
        elif desired == S.RUNNING and self.state < S.RUNNING:
            await self._prepare()
            if self.state < S.STARTING:
                self._report(S.STARTING, "starting")
                health = await self._has_healthcheck()
                if health:
                    self._watch_health()        # before the start, so no health event is missed
                await engine.call(engine.start, self.container_id)
                await self._join_rotation()
                if not health and self.state == S.STARTING:
                    self._report(S.RUNNING, "started")
        elif desired > S.RUNNING and self.state <= S.RUNNING:
            self.stopping = True
            self._stop_health()
            if self.network_ids and self.state == S.RUNNING:
                # Out of the other nodes' rotation first (the dispatcher told them before us).
                await asyncio.sleep(defaults.ENDPOINT_DRAIN_S)
            self.agent.overlays.container_gone(self.id)
            if self.container_id and self.state >= S.STARTING:
                await engine.call(engine.stop, self.container_id, self.task["spec"]["stop_grace_period"])
            self._report(S.SHUTDOWN, "shutdown")

    async def _prepare(self) -> None:
        engine = self.agent.engine
        if self.state < S.ACCEPTED:
            self._report(S.ACCEPTED, "accepted")
        if self.state < S.PREPARING:
            self._report(S.PREPARING, "preparing")
            await engine.call(engine.ensure_image, self.task["spec"]["image"], self.task["spec"]["pull"])
        if self.state < S.READY:
            networks = await self._networks()
            self.container_id = await engine.call(engine.create, networks=networks, **self._container_args())
            self._report(S.READY, "prepared")

    # -- networks -------------------------------------------------------------------------
    @property
    def network_ids(self) -> list[str]:
        return [a["network_id"] for a in self.task.get("networks") or []]

    async def _networks(self) -> list[dict]:
        """The task's networks as the engine attaches them, once built on this node."""
        if not self.network_ids:
            return []
        views = await self.agent.overlays.wait_built(self.network_ids)
        addrs = {a["network_id"]: a["addr"] for a in self.task["networks"]}
        return [{"name": v["name"], "addr": addrs[v["id"]], "gateway": v["gateway"]} for v in views]

    async def _join_rotation(self) -> None:
        """VIPs answer from inside the container's own namespace: its rules go in once it
        has one, before the task is reported running."""
        if self.network_ids:
            pid = await self.agent.engine.call(self.agent.engine.pid, self.container_id)
            if pid:
                await self.agent.overlays.container_started(
                    self.id, pid, self.network_ids, [a["addr"] for a in self.task["networks"]])

    # -- health (SwarmKit's docker controller) -------------------------------------------
    async def _has_healthcheck(self) -> bool:
        spec, engine = self.task["spec"], self.agent.engine
        test = (spec.get("healthcheck") or {}).get("test") or []
        image_has_one = False if test else await engine.call(engine.image_has_healthcheck, spec["image"])
        return dockerargs.has_healthcheck(spec.get("healthcheck"), image_has_one)

    def _watch_health(self, first: str | None = None) -> None:
        loop, engine = asyncio.get_running_loop(), self.agent.engine
        events: asyncio.Queue[str] = asyncio.Queue()
        if first is not None:
            events.put_nowait(first)
        self._unwatch = engine.watch_health(
            self.container_id, lambda status: loop.call_soon_threadsafe(events.put_nowait, status))
        self._health = asyncio.create_task(self._follow_health(events), name=f"health-{self.id[:12]}")

    def _stop_health(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
        if self._health is not None and self._health is not asyncio.current_task():
            self._health.cancel()

    async def _follow_health(self, events: asyncio.Queue) -> None:
        """STARTING until the container first reports healthy, then RUNNING; the first
        unhealthy report fails the task, at once or later, as SwarmKit's controller does."""
        engine = self.agent.engine
        while not self.stopping and self.state <= S.RUNNING:
            try:
                status = await asyncio.wait_for(events.get(), defaults.HEALTH_RESYNC_S)
            except asyncio.TimeoutError:       # an event stream that reconnected may have missed one
                try:
                    status = await engine.call(engine.health, self.container_id)
                except DockerException:        # the engine is away: ask again later
                    continue
            if self.stopping or self.state > S.RUNNING:
                break
            if status == "healthy" and self.state == S.STARTING:
                self._report(S.RUNNING, "started")
            elif status == "unhealthy":
                await self._fail_unhealthy()
            elif status == "exited":
                await self._check_exit()
        self._stop_health()

    async def _fail_unhealthy(self) -> None:
        # Stopped before the report, as SwarmKit does: its replacement then does not race it
        # for a published port.  Its die event is ours, not an exit of its own.
        self.stopping = True
        engine = self.agent.engine
        try:
            await engine.call(engine.stop, self.container_id, self.task["spec"]["stop_grace_period"])
        except DockerException:
            pass                               # failed all the same; the container goes with the task
        self._report(S.FAILED, UNHEALTHY, err=UNHEALTHY)

    async def _check_exit(self) -> None:
        running, code, _ = await self.agent.engine.call(self.agent.engine.exit_code, self.container_id)
        if not running:
            self.exited(code)

    def _container_args(self) -> dict:
        task, spec = self.task, self.task["spec"]
        labels = dict(spec.get("container_labels", {}))
        labels.update({LABEL_NODE: task["node_id"], LABEL_SERVICE_ID: task["service_id"],
                       LABEL_SERVICE_NAME: task["service_name"], LABEL_TASK: task["id"],
                       LABEL_SLOT: str(task["slot"] if task.get("slot") is not None else "")})
        assigned = task.get("assigned_generic") or {}
        gpu_ids = [g for g in assigned.get(GPU_KIND, []) if g in self.agent.nvml_gpu_ids]
        spec = templates.expand_spec(spec, templates.context(task, self.agent.node_id, self.agent.hostname))
        spec["mounts"] = spec["mounts"] + taskfiles.write(self.agent.node_id, task)
        return {"name": container_name(task), "image": spec["image"], "command": spec.get("command", []),
                "env": list(spec.get("env", [])) + resource_env(assigned), "labels": labels,
                "limits": spec.get("limits", {}),
                "gpu_ids": gpu_ids, "spec": spec}
