"""The restart supervisor: decides whether a task that stopped gets a replacement,
and builds the replacement (SwarmKit's condition, delay, max_attempts, window).

Past restarts are kept on the task itself (`restarts`: timestamps), so a new
leader makes the same decisions as the old one.
"""
from __future__ import annotations

from swarmpy.models import TaskState, new_task, now


def _recent(task: dict, window: float, at: float) -> list[float]:
    restarts = task.get("restarts", [])
    return [ts for ts in restarts if not window or ts > at - window]


def should_restart(policy: dict, task: dict, at: float | None = None) -> bool:
    at = now() if at is None else at
    condition = policy.get("condition", "any")
    if condition == "none":
        return False
    if condition == "on-failure" and task["status"]["state"] == TaskState.COMPLETE:
        return False
    max_attempts = policy.get("max_attempts", 0)
    return not max_attempts or len(_recent(task, policy.get("window", 0), at)) < max_attempts


def replacement(service: dict, old: dict, at: float | None = None, delay: bool = True) -> dict:
    """A new task for the old task's slot (or node), started after the restart delay
    unless `delay` is False."""
    at = now() if at is None else at
    policy = service["spec"]["restart_policy"]
    task = new_task(service, old.get("slot"), old.get("node_id") if old.get("slot") is None else None)
    task["restarts"] = _recent(old, policy.get("window", 0), at) + [at]
    wait = policy.get("delay", 0) if delay else 0
    if wait > 0:
        # Held at READY until the delay is over: the orchestrator then sets it RUNNING.
        task["desired_state"] = int(TaskState.READY)
        task["start_at"] = at + wait
    return task


def is_dead(task: dict, node_down: bool) -> bool:
    """A task meant to run that no longer does (it stopped, or its node is gone)."""
    if task["desired_state"] > TaskState.RUNNING:
        return False
    state = task["status"]["state"]
    return state > TaskState.RUNNING or (node_down and state >= TaskState.ASSIGNED)
