"""The placement pass, free of the store so it can be benchmarked and unit tested alone.

Identical tasks (same service and version) are placed as one group: the filter
pipeline runs once per node, then a heap hands each task to the best node, which
is the one with the fewest tasks in its spread group, then the fewest tasks of
this service, then the fewest tasks in all (SwarmKit's order).
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass

from swarmpy.manager.scheduler import constraint
from swarmpy.manager.scheduler.filters import Pipeline
from swarmpy.manager.scheduler.nodeinfo import NodeInfo


@dataclass
class Decision:
    task: dict
    node_id: str | None          # None: not placed, see `explanation`
    assigned_generic: dict
    explanation: str = ""


def _spread_keys(spec: dict) -> list[str]:
    return [p.split("=", 1)[1] for p in spec.get("preferences", []) if p.startswith("spread=")]


class _Group:
    """Placement state for one group of identical tasks."""

    def __init__(self, service_id: str, spec: dict, infos: list[NodeInfo]) -> None:
        self.service_id = service_id
        self.spec = spec
        self.reservations = spec.get("reservations", {})
        self.pipeline = Pipeline(spec, service_id)
        self.spread = _spread_keys(spec)
        # For each spread level: label value -> tasks of this service on nodes with that value.
        self.spread_counts: list[Counter] = [Counter() for _ in self.spread]
        self.heap: list = []
        self._explanation: str | None = None
        for info in infos:
            for level, key in enumerate(self.spread):
                self.spread_counts[level][self._value(info, key)] += info.service_tasks[service_id]
        for info in infos:
            if self.pipeline.check(info):
                self.heap.append((self._key(info), info.id, info))
        heapq.heapify(self.heap)

    @staticmethod
    def _value(info: NodeInfo, key: str) -> str:
        return constraint.node_attribute(info.node, key) or ""

    def _key(self, info: NodeInfo) -> tuple:
        spread = tuple(self.spread_counts[level][self._value(info, key)]
                       for level, key in enumerate(self.spread))
        return spread + (info.service_tasks[self.service_id], info.total_tasks)

    def place(self, task: dict) -> Decision:
        while self.heap:
            key, node_id, info = heapq.heappop(self.heap)
            current = self._key(info)
            if current != key:          # keys only grow: re-queue a stale entry
                heapq.heappush(self.heap, (current, node_id, info))
                continue
            if not self.pipeline.check(info):   # filled up by earlier tasks of the group
                continue
            assigned = info.claim_generic(self.reservations)
            info.add_task(task, assigned)
            for level, k in enumerate(self.spread):
                self.spread_counts[level][self._value(info, k)] += 1
            heapq.heappush(self.heap, (self._key(info), node_id, info))
            return Decision(task, node_id, assigned)
        if self._explanation is None:      # the heap stays empty: the reason no longer changes
            self._explanation = self.pipeline.explain()
        return Decision(task, None, {}, self._explanation)


def _group_key(task: dict) -> tuple:
    return task["service_id"], task.get("service_version"), task.get("node_id")


def place(tasks: list[dict], infos: dict[str, NodeInfo]) -> list[Decision]:
    """Place pending tasks.  A task that already names a node (global services) is only
    checked against that node.  `infos` is updated with what was placed."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for task in tasks:
        groups[_group_key(task)].append(task)
    decisions: list[Decision] = []
    for (service_id, _, node_id), group in groups.items():
        if node_id is not None:
            candidates = [infos[node_id]] if node_id in infos else []
        else:
            candidates = list(infos.values())
        placer = _Group(service_id, group[0]["spec"], candidates)
        decisions.extend(placer.place(task) for task in group)
    return decisions
