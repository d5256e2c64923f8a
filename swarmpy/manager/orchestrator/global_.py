"""Global services: one task on every ready, active node that meets the constraints."""
from __future__ import annotations

from swarmpy.manager.orchestrator.slots import SHUTDOWN, SlotPlan, desired, runnable
from swarmpy.manager.scheduler import constraint


def eligible_nodes(service: dict, nodes: list[dict], keeping: bool = False) -> set[str]:
    """Nodes that should run the service's task: ready, matching, and active (or, for a
    task already there, `keeping=True`, also paused: pause stops new tasks only)."""
    constraints = constraint.parse_all(service["spec"].get("constraints", []))
    allowed = ("active", "pause") if keeping else ("active",)
    return {n["id"] for n in nodes
            if n.get("status", {}).get("state") == "ready"
            and n.get("spec", {}).get("availability", "active") in allowed
            and constraint.node_matches(n, constraints)}


def reconcile(service: dict, tasks: list[dict], nodes: list[dict], down_nodes: set[str]) -> SlotPlan:
    plan = SlotPlan(service, down_nodes, tasks)
    eligible = eligible_nodes(service, nodes, keeping=True)
    new_ok = eligible_nodes(service, nodes)
    live: set[str] = set()
    declined: set[str] = set()
    running: list[dict] = []
    for task in sorted(tasks, key=lambda t: t["created_at"]):
        node_id = task["node_id"]
        if not runnable(task):
            if task.get("restart_declined") == service["version"]:
                declined.add(node_id)
            continue
        if node_id not in eligible:
            plan.ops.append(desired(task["id"], SHUTDOWN))
        elif plan.is_dead(task):
            (live if plan.handle_dead(task) else declined).add(node_id)
        else:
            live.add(node_id)
            running.append(task)
    plan.update(running, tasks)
    for node_id in sorted(new_ok - live - declined):
        plan.new(None, node_id)
    return plan
