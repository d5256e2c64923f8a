"""The orchestrator component: reconciles each service whose tasks or spec changed,
with the replicated or global rules, and commits one transaction per pass."""
from __future__ import annotations

import asyncio
import time

from swarmpy.manager.component import Component
from swarmpy.manager.orchestrator import global_, jobs, replicated
from swarmpy.manager.orchestrator.slots import REMOVE, desired
from swarmpy.models import TaskState

MAX_OPS_PER_TXN = 5000


class Orchestrator(Component):
    name = "orchestrator"

    def __init__(self, store) -> None:
        super().__init__(store)
        self._dirty: set[str] = set()
        self._timers: dict[float, asyncio.TimerHandle] = {}

    def note(self, events) -> bool:
        for e in events:
            if e.kind == "services":
                self._dirty.add(e.obj["id"])
            elif e.kind == "nodes":
                self._full = True
            elif e.kind == "tasks" and (e.action == "delete"
                                        or e.obj["status"]["state"] >= TaskState.RUNNING):
                # >= RUNNING: a replacement that starts running lets a rolling update go on.
                self._dirty.add(e.obj["service_id"])
        return bool(self._dirty) or self._full

    async def reconcile(self, full: bool) -> None:
        tables = self.store.tables
        dirty, self._dirty = self._dirty, set()
        if full:
            dirty = set(tables.objects["services"]) | set(tables.tasks_by_service)
        nodes = tables.list("nodes")
        # A drained node keeps no tasks: they are treated as if the node were down; so are
        # the tasks of a node that was removed from the cluster.
        down = {n["id"] for n in nodes if n.get("status", {}).get("state") != "ready"
                or n.get("spec", {}).get("availability") == "drain"}
        down |= set(tables.tasks_by_node) - {n["id"] for n in nodes}
        ops: list[dict] = []
        for service_id in dirty:
            ops.extend(self._service_ops(service_id, nodes, down))
        for start in range(0, len(ops), MAX_OPS_PER_TXN):
            await self.store.commit(ops[start:start + MAX_OPS_PER_TXN])

    def _service_ops(self, service_id: str, nodes: list[dict], down: set[str]) -> list[dict]:
        tables = self.store.tables
        service = tables.get("services", service_id)
        tasks = tables.service_tasks(service_id)
        if service is None:     # removed: nothing of it may keep running
            return [desired(t["id"], REMOVE) for t in tasks if t["desired_state"] < REMOVE]
        if jobs.is_job(service):
            plan = jobs.reconcile(service, tasks, nodes, down)
        elif service["spec"]["mode"] == "global":
            plan = global_.reconcile(service, tasks, nodes, down)
        else:
            plan = replicated.reconcile(service, tasks, down)
        for at in plan.timers:
            self._wake_at(at)
        if not plan.ops:
            return []
        # The plan was made from this version of the service: if it was removed or changed
        # before the commit, the whole pass is refused and made again from fresh state.
        return [{"op": "check", "kind": "services", "id": service_id, "expect": service["version"]}] + plan.ops

    def _wake_at(self, at: float) -> None:
        if at in self._timers:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, at - time.time())

        def fire() -> None:
            self._timers.pop(at, None)
            self.wake(full=True)

        self._timers[at] = loop.call_later(delay, fire)

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await super().stop()
