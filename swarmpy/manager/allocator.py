"""The allocator moves new tasks from NEW to PENDING once what they need is allocated.

Today a task needs nothing allocated (overlay networks and their IPs come with the
networks issue), so every NEW task is PENDING at once; the stage exists so that
the scheduler only ever sees allocated tasks, as in SwarmKit.
"""
from __future__ import annotations

from swarmpy.manager.component import Component
from swarmpy.models import TaskState, status_patch


class Allocator(Component):
    name = "allocator"

    def note(self, events) -> bool:
        return any(e.kind == "tasks" and e.action != "delete"
                   and e.obj["status"]["state"] == TaskState.NEW for e in events)

    async def reconcile(self, full: bool) -> None:
        ops = [status_patch(t["id"], TaskState.PENDING, "pending task scheduling")
               for t in self.store.list("tasks")
               if t["status"]["state"] == TaskState.NEW and t["desired_state"] <= TaskState.RUNNING]
        if ops:
            await self.store.commit(ops)
