"""Object tables and the transaction apply function.

A transaction is a list of operations applied whole or not at all: every
operation is checked against the current state first, and only if all pass is
anything written.  The same code runs inside the Raft apply path and in unit
tests, so tests exercise the real semantics.

Operations (plain dicts, msgpack-encodable):
  {"op": "create", "kind": K, "obj": {...}}                 id must be new; name unique for named kinds
  {"op": "update", "kind": K, "obj": {...}, "expect": V}     replace whole; expect = version read, or None
  {"op": "patch",  "kind": K, "id": I, "set": {path: val}, "expect": V?,
                   "if_lt": {path: val}?, "skip_missing": bool?, "copy": {path: from_path}?}
  {"op": "delete", "kind": K, "id": I, "expect": V?, "skip_missing": bool?}
  {"op": "check",  "kind": K, "id": I, "expect": V?}         writes nothing; the transaction fails
                                                             unless the object exists (at version V)

`patch` sets dotted paths, so writers that own different fields (the agent owns
`status`, managers own `desired_state`) never overwrite each other.  `if_lt`
turns the op into a no-op unless the current value is below the given one: task
states only move forward.  `copy` sets paths to values of the stored object as it was
before the op (read before `set` applies): a service update keeps the spec it replaces as
previous_spec without sending it through Raft again.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

from raft.errors import ConflictError, ExistsError, NotFoundError, StoreError

KINDS = ("nodes", "services", "tasks", "networks", "secrets", "configs", "cluster")
NAMED_KINDS = ("services", "networks", "secrets", "configs")


@dataclass(frozen=True)
class Event:
    action: str          # "create" | "update" | "delete"
    kind: str
    obj: dict
    index: int


def _get_path(obj: dict, path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _patched(cur: dict, sets: dict[str, Any], owned: bool, copies: dict[str, str] | None = None) -> dict:
    """A new version of `cur` with dotted paths set, copying only the dicts on those paths:
    stored objects are never changed in place, so the versions may share the rest (a task
    status patch no longer copies the task's whole spec). `copies` (path: source path) are
    read from `cur` and shared, not copied, for the same reason."""
    new = dict(cur)
    for path, source in (copies or {}).items():
        _set_path(new, path, _get_path(cur, source))
    for path, value in sets.items():
        _set_path(new, path, value if owned else copy.deepcopy(value))
    return new


def _set_path(new: dict, path: str, value: Any) -> None:
    """Set a dotted path in `new`, a fresh copy, copying the dicts on the way down."""
    *parents, last = path.split(".")
    node = new
    for part in parents:
        child = node.get(part)
        child = dict(child) if isinstance(child, dict) else {}
        node[part] = child
        node = child
    node[last] = value


class Tables:
    """In-memory state: kind -> id -> object dict, plus a name index."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict]] = {k: {} for k in KINDS}
        self.names: dict[str, dict[str, str]] = {k: {} for k in NAMED_KINDS}
        self.index = 0
        # Secondary indexes the managers read on every pass: task ids by service and by node.
        self.tasks_by_service: dict[str, set[str]] = {}
        self.tasks_by_node: dict[str, set[str]] = {}

    # -- reads -------------------------------------------------------------
    def get(self, kind: str, obj_id: str) -> dict | None:
        return self.objects[kind].get(obj_id)

    def by_name(self, kind: str, name: str) -> dict | None:
        obj_id = self.names.get(kind, {}).get(name)
        return self.objects[kind].get(obj_id) if obj_id else None

    def list(self, kind: str) -> list[dict]:
        return list(self.objects[kind].values())

    def service_tasks(self, service_id: str) -> list[dict]:
        table = self.objects["tasks"]
        return [table[t] for t in self.tasks_by_service.get(service_id, ())]

    def node_tasks(self, node_id: str) -> list[dict]:
        table = self.objects["tasks"]
        return [table[t] for t in self.tasks_by_node.get(node_id, ())]

    # -- writes ------------------------------------------------------------
    def apply(self, ops: Iterable[dict], owned: bool = False) -> tuple[dict, list[Event]]:
        """Apply a transaction; returns (result, events).  Never raises: errors are results,
        because this runs on every replica and must not diverge or crash the apply thread.
        `owned`: the ops were just decoded for this call (the Raft apply path), so their
        objects are stored as they are instead of copied."""
        ops = list(ops)
        try:
            planned = self._plan(ops, owned)
        except StoreError as exc:
            return {"ok": False, "code": exc.code, "error": str(exc)}, []
        except Exception as exc:  # malformed op: reject the whole transaction
            return {"ok": False, "code": "store_error", "error": f"malformed transaction: {exc!r}"}, []
        self.index += 1
        events = [self._write(action, kind, obj) for action, kind, obj in planned]
        return {"ok": True, "index": self.index,
                "versions": [e.obj.get("version") if e.obj else None for e in events]}, events

    def _plan(self, ops: list[dict], owned: bool = False) -> list[tuple[str, str, dict]]:
        planned: list[tuple[str, str, dict]] = []
        staged: dict[tuple[str, str], dict | None] = {}
        staged_names: dict[tuple[str, str], str | None] = {}

        def current(kind: str, obj_id: str) -> dict | None:
            if (kind, obj_id) in staged:
                return staged[(kind, obj_id)]
            return self.objects[kind].get(obj_id)

        def name_owner(kind: str, name: str) -> str | None:
            if (kind, name) in staged_names:
                return staged_names[(kind, name)]
            return self.names[kind].get(name)

        for op in ops:
            kind, action = op["kind"], op["op"]
            if kind not in self.objects:
                raise StoreError(f"unknown kind {kind!r}")
            obj_id = op["obj"]["id"] if "obj" in op else op["id"]
            cur = current(kind, obj_id)
            expect = op.get("expect")
            if action == "create":
                if cur is not None:
                    raise ExistsError(f"{kind[:-1]} {obj_id} already exists")
                new = op["obj"] if owned else copy.deepcopy(op["obj"])
            elif cur is None:
                if op.get("skip_missing"):
                    continue
                raise NotFoundError(f"{kind[:-1]} {obj_id} not found")
            elif expect is not None and cur.get("version") != expect:
                raise ConflictError(
                    f"update out of sequence: {kind[:-1]} {obj_id} is at version "
                    f"{cur.get('version')}, not {expect}; read it again and retry")
            elif action == "check":
                continue
            elif action == "update":
                new = op["obj"] if owned else copy.deepcopy(op["obj"])
            elif action == "patch":
                if any(_get_path(cur, p) is not None and _get_path(cur, p) >= v
                       for p, v in op.get("if_lt", {}).items()):
                    continue
                new = _patched(cur, op["set"], owned, op.get("copy"))
            elif action == "delete":
                new = None
            else:
                raise StoreError(f"unknown operation {action!r}")
            if new is not None and kind == "tasks":
                for key in ("service_id", "node_id"):
                    if not isinstance(new.get(key), (str, type(None))):
                        raise StoreError(f"task {obj_id}: {key} must be a string or null")
            if new is not None and new.get("id") != obj_id:
                raise StoreError(f"{kind[:-1]} {obj_id}: an object's id cannot change")
            if kind in NAMED_KINDS:
                self._check_name(kind, obj_id, cur, new, name_owner, staged_names)
            staged[(kind, obj_id)] = new
            planned.append(("delete" if new is None else ("create" if cur is None else "update"),
                            kind, new if new is not None else cur))
        return planned

    @staticmethod
    def _check_name(kind, obj_id, cur, new, name_owner, staged_names) -> None:
        old_name = _get_path(cur, "spec.name") if cur else None
        new_name = _get_path(new, "spec.name") if new else None
        if old_name == new_name:
            return
        if new_name is not None:
            owner = name_owner(kind, new_name)
            if owner is not None and owner != obj_id:
                raise ExistsError(f"{kind[:-1]} with name {new_name} already exists")
            staged_names[(kind, new_name)] = obj_id
        if old_name is not None:
            staged_names[(kind, old_name)] = None

    def _index_task(self, old: dict | None, new: dict | None) -> None:
        for index, key in ((self.tasks_by_service, "service_id"), (self.tasks_by_node, "node_id")):
            old_key, new_key = old and old.get(key), new and new.get(key)
            if old_key == new_key:
                continue
            if old_key:
                ids = index.get(old_key)
                if ids is not None:
                    ids.discard(old["id"])
                    if not ids:
                        del index[old_key]
            if new_key:
                index.setdefault(new_key, set()).add(new["id"])

    def _write(self, action: str, kind: str, obj: dict) -> Event:
        obj_id = obj["id"]
        table = self.objects[kind]
        if kind == "tasks":
            self._index_task(table.get(obj_id), None if action == "delete" else obj)
        if action == "delete":
            del table[obj_id]
            name = _get_path(obj, "spec.name") if kind in NAMED_KINDS else None
            if name is not None and self.names[kind].get(name) == obj_id:
                del self.names[kind][name]
            return Event("delete", kind, obj, self.index)
        obj["version"] = self.index
        old = table.get(obj_id)
        table[obj_id] = obj
        if kind in NAMED_KINDS:
            old_name = _get_path(old, "spec.name") if old else None
            if old_name is not None and self.names[kind].get(old_name) == obj_id:
                del self.names[kind][old_name]
            name = _get_path(obj, "spec.name")
            if name is not None:
                self.names[kind][name] = obj_id
        return Event(action, kind, obj, self.index)
