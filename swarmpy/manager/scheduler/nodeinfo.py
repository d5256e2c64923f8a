"""What the scheduler knows about one node: what it has, what its tasks reserve."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from swarmpy.models import TaskState


def _generic_free(total: dict) -> dict:
    # Named resources (GPU UUIDs) are lists of ids; discrete ones are counts.
    return {k: (list(v) if isinstance(v, list) else int(v)) for k, v in total.items()}


@dataclass
class NodeInfo:
    node: dict
    free_cpus: int = 0
    free_memory: int = 0
    free_generic: dict = field(default_factory=dict)
    service_tasks: Counter = field(default_factory=Counter)
    total_tasks: int = 0

    @classmethod
    def build(cls, node: dict, tasks: list[dict] = ()) -> "NodeInfo":
        res = node.get("description", {}).get("resources", {})
        info = cls(node, res.get("nano_cpus", 0), res.get("memory_bytes", 0),
                   _generic_free(res.get("generic", {})))
        for task in tasks:
            # Only placed tasks hold resources: a global task names its node before it is placed.
            # A task being stopped (desired > RUNNING) holds them until it has stopped, as in
            # SwarmKit, so its GPUs are not handed out while its container still runs; it no
            # longer counts towards spreading or max replicas per node.
            if TaskState.ASSIGNED <= task["status"]["state"] <= TaskState.RUNNING:
                info.add_task(task, task.get("assigned_generic") or {},
                              active=task["desired_state"] <= TaskState.RUNNING)
        return info

    @property
    def id(self) -> str:
        return self.node["id"]

    def is_ready(self) -> bool:
        return (self.node.get("status", {}).get("state") == "ready"
                and self.node.get("spec", {}).get("availability", "active") == "active")

    def fits(self, reservations: dict) -> bool:
        if reservations.get("nano_cpus", 0) > self.free_cpus:
            return False
        if reservations.get("memory_bytes", 0) > self.free_memory:
            return False
        for kind, count in reservations.get("generic", {}).items():
            free = self.free_generic.get(kind, 0)
            if (len(free) if isinstance(free, list) else free) < count:
                return False
        return True

    def claim_generic(self, reservations: dict) -> dict:
        """Pick concrete resources for a task: the first free ids of each named kind."""
        assigned = {}
        for kind, count in reservations.get("generic", {}).items():
            free = self.free_generic.get(kind, 0)
            assigned[kind] = free[:count] if isinstance(free, list) else count
        return assigned

    def add_task(self, task: dict, assigned_generic: dict, active: bool = True) -> None:
        res = task["spec"].get("reservations", {})
        self.free_cpus -= res.get("nano_cpus", 0)
        self.free_memory -= res.get("memory_bytes", 0)
        for kind, value in assigned_generic.items():
            free = self.free_generic.get(kind)
            if isinstance(free, list):
                taken = set(value)
                self.free_generic[kind] = [r for r in free if r not in taken]
            elif free is not None:
                self.free_generic[kind] = free - int(value)
        if active:
            self.service_tasks[task["service_id"]] += 1
            self.total_tasks += 1
