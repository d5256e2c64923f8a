"""The task reaper: deletes tasks nobody needs to see any more.

* tasks desired REMOVE (scaled down, service removed) once they have stopped, or
  at once if no node ever got them;
* old tasks of a slot (or of a global service's node) beyond the history limit,
  oldest first, never one that is still meant to run.
"""
from __future__ import annotations

from collections import defaultdict

from swarmpy import defaults
from swarmpy.manager.component import Component
from swarmpy.models import TaskState


def _stopped(task: dict) -> bool:
    state = task["status"]["state"]
    return state > TaskState.RUNNING or state < TaskState.ASSIGNED or not task.get("node_id")


def reap(tasks: list[dict], history_limit: int) -> list[str]:
    """Ids of the tasks to delete, among one service's tasks."""
    doomed = [t["id"] for t in tasks if t["desired_state"] >= TaskState.REMOVE and _stopped(t)]
    by_slot: dict = defaultdict(list)
    for t in tasks:
        if t["desired_state"] < TaskState.REMOVE:
            by_slot[t["slot"] if t.get("slot") is not None else t.get("node_id")].append(t)
    for slot_tasks in by_slot.values():
        if len(slot_tasks) <= history_limit:
            continue
        old = sorted((t for t in slot_tasks if t["desired_state"] > TaskState.RUNNING and _stopped(t)),
                     key=lambda t: t["created_at"])
        doomed.extend(t["id"] for t in old[:len(slot_tasks) - history_limit])
    return doomed


class TaskReaper(Component):
    name = "taskreaper"
    debounce_s = 0.05

    def __init__(self, store, history_limit: int = defaults.TASK_HISTORY_LIMIT) -> None:
        super().__init__(store)
        self.history_limit = history_limit
        self._dirty: set[str] = set()

    def note(self, events) -> bool:
        for e in events:
            if e.kind == "tasks" and e.action != "delete" and (
                    e.obj["desired_state"] > TaskState.RUNNING or e.obj["status"]["state"] > TaskState.RUNNING):
                self._dirty.add(e.obj["service_id"])
        return bool(self._dirty)

    async def reconcile(self, full: bool) -> None:
        tables = self.store.tables
        dirty, self._dirty = self._dirty, set()
        if full:
            dirty = set(tables.tasks_by_service)
        doomed = []
        for service_id in dirty:
            doomed.extend(reap(tables.service_tasks(service_id), self.history_limit))
        if doomed:
            await self.store.commit([{"op": "delete", "kind": "tasks", "id": t, "skip_missing": True}
                                     for t in doomed])
