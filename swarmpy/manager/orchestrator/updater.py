"""The updater: moves a service's tasks to its current spec as its update_config says
(SwarmKit's manager/orchestrator/update), and keeps `update_status` on the service.

Like the rest of the orchestrator it keeps no memory between passes: every pass reads
the service's `update_status` (set by the control API in the same transaction as the
new spec) and its tasks, and decides what to do now:

- parallelism slots at a time (0: all); `order` stop-first shuts the old task down
  as its replacement is made, start-first shuts it down once the replacement runs
  (with a healthcheck, once healthy: the agent reports RUNNING only then);
- after a batch has come up, `delay` before the next;
- a task of the new spec that stops (complete, failed, rejected) while the update
  runs, or within `monitor` after the last replacement came up, is a failure; more
  than max_failure_ratio of the slots failing triggers failure_action: pause (state
  paused), continue, or rollback (spec and previous_spec swap, state rollback_started,
  rollback_config from then on). A rollback that fails pauses (rollback_paused);
- `monitor` after the last replacement came up, the update is completed.

Departure from SwarmKit, for statelessness: `delay` and `monitor` run from when the
latest replacement came up, not per worker and per task.
"""
from __future__ import annotations

from swarmpy.models import ServiceSpec, TaskState, UpdateConfig, now, to_dict

UPDATING, PAUSED, COMPLETED = "updating", "paused", "completed"
ROLLBACK_STARTED, ROLLBACK_PAUSED, ROLLBACK_COMPLETED = "rollback_started", "rollback_paused", "rollback_completed"
ACTIVE = (UPDATING, ROLLBACK_STARTED)
FAILURE_STATES = (int(TaskState.COMPLETE), int(TaskState.FAILED), int(TaskState.REJECTED))
RUNNING = int(TaskState.RUNNING)

# Fields whose change does not make running tasks outdated.
NOT_TASK_FIELDS = ("replicas", "update_config", "rollback_config")


# A key missing from a spec stored before the field existed means the field's default.
_DEFAULTS = to_dict(ServiceSpec(name="", image=""))


def specs_differ(old: dict, new: dict) -> bool:
    """Whether tasks of `old` must be replaced to run `new` (replica count aside)."""
    return any(old.get(k, _DEFAULTS.get(k)) != new.get(k, _DEFAULTS.get(k))
               for k in new.keys() | old.keys() if k not in NOT_TASK_FIELDS)


def started(state: str, message: str) -> dict:
    return {"state": state, "started_at": now(), "completed_at": None, "message": message}


def status_for_new_spec(old_spec: dict | None, new_spec: dict) -> dict | None:
    """The update_status a spec change starts, or None when no task is affected."""
    if old_spec is None or not specs_differ(old_spec, new_spec):
        return None
    return started(UPDATING, "update in progress")


# A rollback as a patch's `copy`: spec and previous_spec swap as each replica has them stored,
# so the Raft entry carries neither.
SWAP_SPECS = {"spec": "previous_spec", "previous_spec": "spec"}
_CONFIG_DEFAULTS = to_dict(UpdateConfig())      # scalars only: shared by every merge below


def config_for(service: dict) -> dict:
    state = (service.get("update_status") or {}).get("state", "")
    key = "rollback_config" if state.startswith("rollback") else "update_config"
    return {**_CONFIG_DEFAULTS, **(service["spec"].get(key) or {})}


class Update:
    """One pass of the updater over one service, adding its ops to a SlotPlan."""

    def __init__(self, plan, all_tasks: list[dict]) -> None:
        self.plan = plan
        self.service = plan.service
        self.status = self.service.get("update_status") or {}
        self.config = config_for(self.service)
        self.all_tasks = all_tasks
        self.slot_count = 0

    def run(self, live: list[dict]) -> None:
        slots: dict[object, list[dict]] = {}
        for task in live:
            slots.setdefault(task.get("slot") if task.get("slot") is not None else task.get("node_id"),
                             []).append(task)
        self.slot_count = len(slots)
        waiting, in_flight, last_up = [], 0, self.status.get("started_at") or 0.0
        for tasks in slots.values():
            old = [t for t in tasks if self._outdated(t)]
            new = [t for t in tasks if t not in old]
            up = [t for t in new if t["status"]["state"] == RUNNING]
            last_up = max([last_up] + [t["status"]["timestamp"] for t in up])
            if old and up:             # start-first: the replacement runs, the old one goes
                for task in old:
                    self.plan.stop(task)
            elif old and new or (new and not up):
                in_flight += 1
            elif old:
                waiting.append(old[0])
        for task in live:
            if "version" in task:
                self.plan.release(task)
        if self.status.get("state") in (PAUSED, ROLLBACK_PAUSED) or self._failed():
            return
        if waiting:
            self._replace(waiting, in_flight, last_up)
        elif not in_flight and self.status.get("state") in ACTIVE:
            self._complete_after(last_up + self.config["monitor"])

    def _outdated(self, task: dict) -> bool:
        # "version": stored tasks only; a replacement made in this pass runs the current spec
        return "version" in task and specs_differ(task["spec"], self.service["spec"])

    def _replace(self, waiting: list[dict], in_flight: int, last_up: float) -> None:
        parallelism, delay = self.config["parallelism"], self.config["delay"]
        updated_some = last_up > (self.status.get("started_at") or 0.0)
        if delay and updated_some and not in_flight and now() < last_up + delay:
            self.plan.timers.append(last_up + delay)
            return
        budget = len(waiting) if parallelism == 0 else max(0, parallelism - in_flight)
        waiting.sort(key=lambda t: (t.get("slot") or 0, t.get("node_id") or ""))
        for task in waiting[:budget]:
            if self.config["order"] == "start-first":
                self.plan.new(task.get("slot"), task.get("node_id") if task.get("slot") is None else None)
            else:
                self.plan.stop(task)
                self.plan.new_after(task)

    def _failed(self) -> bool:
        """Apply failure_action when too many tasks of this update failed; True to stop here."""
        state = self.status.get("state")
        if state not in ACTIVE:
            return False
        since = self.status.get("started_at") or 0.0
        failures = [t for t in self.all_tasks
                    if t["created_at"] >= since and t["status"]["state"] in FAILURE_STATES
                    and not specs_differ(t["spec"], self.service["spec"])]
        total = max(1, self.slot_count)
        if len(failures) <= self.config["max_failure_ratio"] * total:
            return False
        action = self.config["failure_action"]
        if action == "continue":
            return False
        culprit = max(failures, key=lambda t: t["status"]["timestamp"])["id"]
        if action == "rollback" and state == UPDATING and self.service.get("previous_spec"):
            # spec and previous_spec swap as stored when the op applies (`copy`), not as read here.
            self._set_service({"update_status": started(ROLLBACK_STARTED, "update rolled back due to failure "
                                                                          f"or early termination of task {culprit}")},
                              copy=SWAP_SPECS)
            return True
        paused = ROLLBACK_PAUSED if state == ROLLBACK_STARTED else PAUSED
        what = "rollback" if state == ROLLBACK_STARTED else "update"
        self._set_status(paused, f"{what} paused due to failure or early termination of task {culprit}")
        return True

    def _complete_after(self, at: float) -> None:
        if now() < at:
            self.plan.timers.append(at)
            return
        rollback = self.status.get("state") == ROLLBACK_STARTED
        self._set_status(ROLLBACK_COMPLETED if rollback else COMPLETED,
                         "rollback completed" if rollback else "update completed", completed=True)

    def _set_status(self, state: str, message: str, completed: bool = False) -> None:
        status = dict(self.status, state=state, message=message, completed_at=now() if completed else None)
        self._set_service({"update_status": status})

    def _set_service(self, values: dict, copy: dict | None = None) -> None:
        op = {"op": "patch", "kind": "services", "id": self.service["id"], "set": values}
        if copy:
            op["copy"] = copy
        self.plan.ops.append(op)
