"""The scheduler component: places PENDING tasks on nodes and writes the decisions
as one transaction per pass (ASSIGNED with the node, or the reason it cannot be placed)."""
from __future__ import annotations

from swarmpy import defaults
from swarmpy.manager.component import Component
from swarmpy.manager.scheduler.nodeinfo import NodeInfo
from swarmpy.manager.scheduler.placement import place
from swarmpy.models import TaskState, now

PENDING_MESSAGE = "pending task scheduling"


def _is_pending(task: dict) -> bool:
    return (task["status"]["state"] == TaskState.PENDING
            and task["desired_state"] <= TaskState.RUNNING)


class Scheduler(Component):
    """Places newly pending tasks as they come; retries the ones that did not fit only when
    something that could make room changed (a node, a task stopping), or on the periodic
    full pass.  Re-placing every unplaceable task on every pass would make each create
    cost as much as all the pending tasks together."""
    name = "scheduler"
    debounce_s = defaults.SCHEDULER_BATCH_S

    def __init__(self, store) -> None:
        super().__init__(store)
        self._new: set[str] = set()
        self._unplaced: set[str] = set()

    def note(self, events) -> bool:
        wake = False
        for e in events:
            if e.kind == "nodes":
                self._full = wake = True
            elif e.kind != "tasks":
                continue
            elif (e.action == "delete" or e.obj["status"]["state"] > TaskState.RUNNING
                    or e.obj["desired_state"] > TaskState.RUNNING):
                self._unplaced.discard(e.obj["id"])
                if self._unplaced:          # resources may have been freed for those
                    self._full = wake = True
            elif _is_pending(e.obj) and e.obj["id"] not in self._unplaced:
                self._new.add(e.obj["id"])
                wake = True
        return wake

    def node_infos(self) -> dict[str, NodeInfo]:
        tables = self.store.tables
        return {n["id"]: NodeInfo.build(n, tables.node_tasks(n["id"])) for n in tables.list("nodes")}

    def _pending(self, full: bool) -> list[dict]:
        new, self._new = self._new, set()
        if full:
            self._unplaced = set()
            return [t for t in self.store.list("tasks") if _is_pending(t)]
        tasks = (self.store.get("tasks", task_id) for task_id in new)
        return [t for t in tasks if t is not None and _is_pending(t)]

    async def reconcile(self, full: bool) -> None:
        pending = self._pending(full)
        if not pending:
            return
        pending.sort(key=lambda t: (t["created_at"], t.get("slot") or 0))
        decisions = place(pending, self.node_infos())
        ops = []
        for d in decisions:
            if d.node_id is not None:
                ops.append({"op": "patch", "kind": "tasks", "id": d.task["id"], "skip_missing": True,
                            "if_lt": {"status.state": int(TaskState.ASSIGNED)},
                            "set": {"node_id": d.node_id, "assigned_generic": d.assigned_generic,
                                    "status.state": int(TaskState.ASSIGNED),
                                    "status.message": "scheduler assigned task to node",
                                    "status.err": "", "status.timestamp": now()}})
                continue
            self._unplaced.add(d.task["id"])
            if d.task["status"].get("err") != d.explanation:
                ops.append({"op": "patch", "kind": "tasks", "id": d.task["id"], "skip_missing": True,
                            "if_lt": {"status.state": int(TaskState.ASSIGNED)},
                            "set": {"status.message": PENDING_MESSAGE, "status.err": d.explanation,
                                    "status.timestamp": now()}})
        if ops:
            await self.store.commit(ops)
            placed = sum(1 for d in decisions if d.node_id)
            self.log.info("scheduled", placed=placed, unplaced=len(decisions) - placed)
