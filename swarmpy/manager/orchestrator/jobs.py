"""Jobs (SwarmKit's job modes): tasks that run to completion, not forever.

- replicated-job: `replicas` completions in all, at most `max_concurrent` tasks at once
  (0: all of them), each in a slot numbered 1..replicas;
- global-job: one completion on every eligible node.

A task that completes (exit 0) keeps its slot done: it stays desired RUNNING, state
COMPLETE, so the task reaper leaves it and `service ps` shows it. A task that fails is
restarted under the restart policy, where `any` counts as `on-failure` (a job's
success is not a reason to run it again). A spec change re-runs the job: tasks of an
older spec are shut down and completions of the new spec count from zero.
"""
from __future__ import annotations

from swarmpy.manager.orchestrator import restart
from swarmpy.manager.orchestrator.global_ import eligible_nodes
from swarmpy.manager.orchestrator.slots import SlotPlan, runnable, spec_changed
from swarmpy.models import TaskState

COMPLETE = int(TaskState.COMPLETE)


def is_job(service: dict) -> bool:
    return service["spec"]["mode"].endswith("-job")


def reconcile(service: dict, tasks: list[dict], nodes: list[dict], down_nodes: set[str]) -> SlotPlan:
    plan = SlotPlan(service, down_nodes, tasks)
    taken: set = set()          # slots (nodes) completed, running, or given up on
    active = 0                  # tasks meant to run now (replacements included)
    for task in sorted(tasks, key=lambda t: t["created_at"]):
        if not runnable(task):
            if task.get("restart_declined") == service["version"] and not spec_changed(service, task):
                taken.add(_key(task))
        elif spec_changed(service, task):
            plan.stop(task)                    # an older run of the job
        elif task["status"]["state"] == COMPLETE:
            taken.add(_key(task))
        elif plan.is_dead(task):
            active += _handle_failure(plan, service, task, down_nodes)
            taken.add(_key(task))
        else:
            taken.add(_key(task))
            active += 1
            plan.release(task)
    if service["spec"]["mode"] == "global-job":
        for node_id in sorted(eligible_nodes(service, nodes) - taken):
            plan.new(None, node_id)
    else:
        _fill_slots(plan, service["spec"], taken, active)
    return plan


def _handle_failure(plan: SlotPlan, service: dict, task: dict, down_nodes: set[str]) -> int:
    """Restart a failed job task if its policy allows; returns 1 if it was."""
    plan.stop(task)
    policy = dict(service["spec"]["restart_policy"])
    if policy.get("condition") == "any":
        policy["condition"] = "on-failure"
    if restart.should_restart(policy, task):
        plan.create(restart.replacement(service, task, delay=task.get("node_id") not in down_nodes))
        return 1
    # the slot stays failed until the job is changed (as for services)
    plan.ops.append({"op": "patch", "kind": "tasks", "id": task["id"], "skip_missing": True,
                     "set": {"restart_declined": service["version"]}})
    return 0


def _key(task: dict):
    return task["slot"] if task.get("slot") is not None else task.get("node_id")


def _fill_slots(plan: SlotPlan, spec: dict, taken: set, active: int) -> None:
    total = spec["replicas"]
    room = (spec.get("max_concurrent") or total) - active
    free = [slot for slot in range(1, total + 1) if slot not in taken]
    for slot in free[:max(0, room)]:
        plan.new(slot, None)


def progress(service: dict, tasks: list[dict]) -> dict:
    """For `service ls`: running now, completed, and the completions wanted."""
    current = [t for t in tasks if runnable(t) and not spec_changed(service, t)]
    completed = sum(1 for t in current if t["status"]["state"] == COMPLETE)
    running = sum(1 for t in current if t["status"]["state"] == int(TaskState.RUNNING))
    return {"running": running, "completed": completed, "total": service["spec"]["replicas"]}

