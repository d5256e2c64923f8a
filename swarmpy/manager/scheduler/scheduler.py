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
    name = "scheduler"
    debounce_s = defaults.SCHEDULER_BATCH_S

    def note(self, events) -> bool:
        for e in events:
            if e.kind == "nodes":
                return True
            if e.kind == "tasks" and (_is_pending(e.obj) or e.action == "delete"
                                      or e.obj["status"]["state"] > TaskState.RUNNING
                                      or e.obj["desired_state"] > TaskState.RUNNING):
                return True
        return False

    def node_infos(self) -> dict[str, NodeInfo]:
        tables = self.store.tables
        return {n["id"]: NodeInfo.build(n, tables.node_tasks(n["id"])) for n in tables.list("nodes")}

    async def reconcile(self, full: bool) -> None:
        pending = [t for t in self.store.list("tasks") if _is_pending(t)]
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
            elif d.task["status"].get("err") != d.explanation:
                ops.append({"op": "patch", "kind": "tasks", "id": d.task["id"], "skip_missing": True,
                            "if_lt": {"status.state": int(TaskState.ASSIGNED)},
                            "set": {"status.message": PENDING_MESSAGE, "status.err": d.explanation,
                                    "status.timestamp": now()}})
        if ops:
            await self.store.commit(ops)
            placed = sum(1 for d in decisions if d.node_id)
            self.log.info("scheduled", placed=placed, unplaced=len(decisions) - placed)
