"""Waiting for services to converge, with docker's progress texts: a line per service
whenever its progress changes, then `verify: Service NAME converged`."""
from __future__ import annotations

import time

from swarmpy.cli.client import Client, DaemonError
from swarmpy.manager.orchestrator.updater import specs_differ
from swarmpy.models import TaskState

PROGRESS_POLL_S = 0.5


def wait_converged(client: Client, names: list[str]) -> None:
    """Print each service's progress as it changes, then docker's `verify: Service converged`."""
    shown: dict[str, str] = {}
    pending = list(names)
    while pending:
        for name in list(pending):
            line, done = _progress(client, name)
            if line != shown.get(name):
                print(f"{name}: {line}", flush=True)
                shown[name] = line
            if done:
                print(f"verify: Service {name} converged", flush=True)
                pending.remove(name)
        if pending:
            time.sleep(PROGRESS_POLL_S)


def _progress(client: Client, name: str) -> tuple[str, bool]:
    service = client.get(f"/services/{name}")
    status = service.get("update_status") or {}
    if status.get("state") in ("paused", "rollback_paused"):
        raise DaemonError(0, f"{name}: {status.get('message')}")
    tasks = client.get("/tasks", service=service["id"])
    if service["spec"]["mode"].endswith("-job"):
        return _job_progress(service, tasks)
    current = [t for t in tasks if t["desired_state"] <= TaskState.RUNNING and _current(t, service)]
    running = sum(1 for t in current if t["status"]["state"] == TaskState.RUNNING)
    if service["spec"]["mode"] == "global":
        # the eligible nodes, as the manager counts them: tasks may not exist yet
        listed = next(s for s in client.get("/services") if s["id"] == service["id"])
        desired = listed["replicas_status"]["desired"]
    else:
        desired = service["spec"]["replicas"]
    line = f"{running}/{desired} running"
    failed = [t for t in tasks if t["status"]["state"] in (TaskState.FAILED, TaskState.REJECTED)
              and t["status"].get("err")]
    if failed and running < desired:
        latest = max(failed, key=lambda t: t["status"]["timestamp"])
        line += f" (task failed: {latest['status']['err']})"
    if status.get("state") == "rollback_started":
        line += f" ({status.get('message')})"
    stale = any(t["desired_state"] <= TaskState.RUNNING and not _current(t, service) for t in tasks)
    return line, running == desired and not stale


def _current(task: dict, service: dict) -> bool:
    return not specs_differ(task["spec"], service["spec"])


def _job_progress(service: dict, tasks: list[dict]) -> tuple[str, bool]:
    current = [t for t in tasks if t["desired_state"] <= TaskState.RUNNING and _current(t, service)]
    completed = sum(1 for t in current if t["status"]["state"] == TaskState.COMPLETE)
    if service["spec"]["mode"] == "replicated-job":
        total = service["spec"]["replicas"]
        return f"{completed}/{total} completed", completed == total
    total = len({t["node_id"] for t in current})      # one per eligible node, once placed
    return f"{completed}/{total} completed", 0 < total == completed
