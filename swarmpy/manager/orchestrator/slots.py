"""What replicated and global orchestration share: per-slot bookkeeping of a service's tasks."""
from __future__ import annotations

from swarmpy.manager.orchestrator import restart, updater
from swarmpy.models import TaskState, new_task, now

SHUTDOWN, REMOVE, RUNNING = int(TaskState.SHUTDOWN), int(TaskState.REMOVE), int(TaskState.RUNNING)


def desired(task_id: str, state: int) -> dict:
    return {"op": "patch", "kind": "tasks", "id": task_id, "skip_missing": True,
            "set": {"desired_state": state}, "if_lt": {"desired_state": state}}


def runnable(task: dict) -> bool:
    return task["desired_state"] <= RUNNING


def spec_changed(service: dict, task: dict) -> bool:
    """The task runs an older spec than the service's (replica count aside)."""
    return updater.specs_differ(task["spec"], service["spec"])


class SlotPlan:
    """Ops and bookkeeping for one pass over one service."""

    def __init__(self, service: dict, down_nodes: set[str], tasks: list[dict] = ()) -> None:
        self.service = service
        self.down_nodes = down_nodes
        self.tasks_by_id = {t["id"]: t for t in tasks}
        self.ops: list[dict] = []
        self.timers: list[float] = []

    def create(self, task: dict) -> None:
        self.ops.append({"op": "create", "kind": "tasks", "obj": task})
        if task.get("start_at"):
            self.timers.append(task["start_at"])

    def new(self, slot: int | None, node_id: str | None) -> None:
        self.create(new_task(self.service, slot, node_id))

    def new_after(self, old: dict) -> None:
        """A replacement for `old` held at READY until `old` has stopped (stop-first, as
        SwarmKit's restart supervisor waits for the old task before starting the new)."""
        task = new_task(self.service, old.get("slot"), old.get("node_id") if old.get("slot") is None else None,
                        desired_state=TaskState.READY)
        task["start_after"] = old["id"]
        self.create(task)

    def handle_dead(self, task: dict) -> bool:
        """Shut a dead task down and maybe restart it; returns True if the slot stays live."""
        self.ops.append(desired(task["id"], SHUTDOWN))
        if restart.should_restart(self.service["spec"]["restart_policy"], task):
            # The delay guards against a crash-looping task; a task whose node went down did
            # nothing wrong, so its replacement starts at once (SwarmKit delays those too).
            lost_with_node = task.get("node_id") in self.down_nodes
            self.create(restart.replacement(self.service, task, delay=not lost_with_node))
            return True
        # Declined: the slot stays down until the service is next updated (as in swarm).
        self.ops.append({"op": "patch", "kind": "tasks", "id": task["id"], "skip_missing": True,
                         "set": {"restart_declined": self.service["version"]}})
        return False

    def release(self, task: dict) -> None:
        """A task whose time has come: promote it from READY to RUNNING, once its restart
        delay is over and the task it replaces has stopped."""
        if task["desired_state"] != int(TaskState.READY):
            return
        start_at = task.get("start_at")
        if start_at and start_at > now():
            self.timers.append(start_at)
            return
        if not start_at and not task.get("start_after"):
            return
        if task.get("start_after") and not self._stopped(task["start_after"]):
            return                  # the old task's status change wakes the next pass
        # if_lt: a removal committed since this pass read the task must win
        self.ops.append({"op": "patch", "kind": "tasks", "id": task["id"], "skip_missing": True,
                         "set": {"desired_state": RUNNING}, "if_lt": {"desired_state": RUNNING}})

    def _stopped(self, task_id: str) -> bool:
        old = self.tasks_by_id.get(task_id)
        if old is None or old.get("node_id") in self.down_nodes:
            return True
        state = old["status"]["state"]
        return state > RUNNING or state < int(TaskState.ASSIGNED)

    def update(self, live_tasks: list[dict], all_tasks: list[dict]) -> None:
        """Move live tasks to the current spec, as the service's update_config says."""
        updater.Update(self, all_tasks).run(live_tasks)

    def stop(self, task: dict) -> None:
        self.ops.append(desired(task["id"], SHUTDOWN))

    def is_dead(self, task: dict) -> bool:
        return restart.is_dead(task, task.get("node_id") in self.down_nodes)
