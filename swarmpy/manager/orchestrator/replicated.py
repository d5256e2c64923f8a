"""Replicated services: keep `replicas` slots filled, numbered from 1."""
from __future__ import annotations

from swarmpy.manager.orchestrator.slots import REMOVE, SlotPlan, desired, runnable


def reconcile(service: dict, tasks: list[dict], down_nodes: set[str]) -> SlotPlan:
    plan = SlotPlan(service, down_nodes, tasks)
    live: dict[int, list[dict]] = {}
    declined: set[int] = set()
    for task in sorted(tasks, key=lambda t: t["created_at"]):
        slot = task["slot"]
        if runnable(task) and plan.is_dead(task):
            if plan.handle_dead(task):
                live.setdefault(slot, []).append(plan.ops[-1]["obj"])
            else:
                declined.add(slot)
        elif runnable(task):
            live.setdefault(slot, []).append(task)
        elif task.get("restart_declined") == service["version"]:
            declined.add(slot)
    declined -= live.keys()
    plan.update([task for slot_tasks in live.values() for task in slot_tasks], tasks)
    _scale(plan, service["spec"]["replicas"], live, declined)
    return plan


def _scale(plan: SlotPlan, want: int, live: dict[int, list[dict]], declined: set[int]) -> None:
    occupied = sorted(live.keys() | declined)
    if want > len(occupied):
        taken, slot = set(occupied), 0
        for _ in range(want - len(occupied)):
            slot += 1
            while slot in taken:
                slot += 1
            plan.new(slot, None)
    for slot in occupied[want:] if want < len(occupied) else ():
        for task in live.get(slot, []):
            plan.ops.append(desired(task["id"], REMOVE))
