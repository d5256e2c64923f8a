"""SwarmKit's filter pipeline: each filter accepts or rejects a node and can explain
how many nodes it rejected, which is what `service ps` shows for a pending task."""
from __future__ import annotations

from collections import Counter

from swarmpy.manager.scheduler import constraint
from swarmpy.manager.scheduler.nodeinfo import NodeInfo


def _nodes(n: int) -> str:
    return "1 node" if n == 1 else f"{n} nodes"


class ReadyFilter:
    def check(self, info: NodeInfo) -> bool:
        return info.is_ready()

    def explain(self, n: int) -> str:
        return f"{_nodes(n)} not available for new tasks"


class ResourceFilter:
    def __init__(self, spec: dict) -> None:
        self.reservations = spec.get("reservations", {})

    def check(self, info: NodeInfo) -> bool:
        return info.fits(self.reservations)

    def explain(self, n: int) -> str:
        return f"insufficient resources on {_nodes(n)}"


class ConstraintFilter:
    def __init__(self, spec: dict) -> None:
        self.constraints = constraint.parse_all(spec.get("constraints", []))

    def check(self, info: NodeInfo) -> bool:
        return constraint.node_matches(info.node, self.constraints)

    def explain(self, n: int) -> str:
        return f"scheduling constraints not satisfied on {_nodes(n)}"


class MaxReplicasFilter:
    def __init__(self, spec: dict, service_id: str) -> None:
        self.limit = spec.get("max_replicas_per_node", 0)
        self.service_id = service_id

    def check(self, info: NodeInfo) -> bool:
        return not self.limit or info.service_tasks[self.service_id] < self.limit

    def explain(self, n: int) -> str:
        return f"max replicas per node limit exceed on {_nodes(n)}"


class Pipeline:
    """Runs the filters in SwarmKit's order; a node is charged to the first filter it fails."""

    def __init__(self, spec: dict, service_id: str) -> None:
        self.filters = [ReadyFilter(), ResourceFilter(spec), ConstraintFilter(spec),
                        MaxReplicasFilter(spec, service_id)]
        self.failures: Counter = Counter()

    def check(self, info: NodeInfo) -> bool:
        for i, f in enumerate(self.filters):
            if not f.check(info):
                self.failures[i] += 1
                return False
        return True

    def explain(self) -> str:
        # SwarmKit's order: the reason that rejected the most nodes first.
        ranked = sorted(self.failures.items(), key=lambda item: (-item[1], item[0]))
        parts = [self.filters[i].explain(n) for i, n in ranked]
        return "no suitable node" + (f" ({'; '.join(parts)})" if parts else "")
