"""The data model: specs as dataclasses, stored objects as their dict form.

The store keeps plain dicts (msgpack-encodable); `to_dict`/`from_dict` convert.
"""
from __future__ import annotations

import dataclasses
import functools
import secrets
import time
import typing
from dataclasses import dataclass, field
from enum import IntEnum

from swarmpy import defaults


class TaskState(IntEnum):
    # SwarmKit's values: spaced so that states compare, and only move forward.
    NEW = 0
    PENDING = 64
    ASSIGNED = 192
    ACCEPTED = 256
    PREPARING = 320
    READY = 384
    STARTING = 448
    RUNNING = 512
    COMPLETE = 576
    SHUTDOWN = 640
    FAILED = 704
    REJECTED = 768
    REMOVE = 800
    ORPHANED = 832

    @property
    def label(self) -> str:
        return self.name.lower()

    def is_terminal(self) -> bool:
        return self > TaskState.RUNNING


@dataclass
class Resources:
    nano_cpus: int = 0
    memory_bytes: int = 0
    generic: dict[str, int] = field(default_factory=dict)   # kind -> count


@dataclass
class RestartPolicy:
    condition: str = defaults.RESTART_CONDITION            # none | on-failure | any
    delay: float = defaults.RESTART_DELAY_S
    max_attempts: int = defaults.RESTART_MAX_ATTEMPTS
    window: float = defaults.RESTART_WINDOW_S


@dataclass
class ServiceSpec:
    name: str
    image: str
    command: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    container_labels: dict[str, str] = field(default_factory=dict)
    mode: str = "replicated"                                 # replicated | global
    replicas: int = defaults.REPLICAS
    constraints: list[str] = field(default_factory=list)
    preferences: list[str] = field(default_factory=list)     # "spread=node.labels.zone"
    max_replicas_per_node: int = 0
    reservations: Resources = field(default_factory=Resources)
    limits: Resources = field(default_factory=Resources)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace_period: float = defaults.STOP_GRACE_PERIOD_S
    pull: str = defaults.PULL_POLICY                          # always | missing | never
    update_parallelism: int = defaults.UPDATE_PARALLELISM


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)


@functools.cache
def _type_hints(cls) -> dict:
    # get_type_hints re-evaluates annotations on every call: 9% of a leader's write path.
    return typing.get_type_hints(cls)


def from_dict(cls, data: dict):
    """Build a dataclass from its dict form, recursing into dataclass fields."""
    hints = _type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        kwargs[f.name] = value
    return cls(**kwargs)


_ID_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id() -> str:
    """Docker-style: 128 random bits in base 36, 25 characters, shown truncated to 12.
    One conversion instead of 25 `secrets.choice` calls: ids are made per task."""
    n = int.from_bytes(secrets.token_bytes(16), "big")
    digits = []
    while n:
        n, r = divmod(n, 36)
        digits.append(_ID_ALPHABET[r])
    return "".join(reversed(digits)).rjust(25, "0")


def now() -> float:
    return time.time()


def new_service(spec: ServiceSpec) -> dict:
    ts = now()
    return {"id": new_id(), "spec": to_dict(spec), "previous_spec": None,
            "created_at": ts, "updated_at": ts}


def new_task(service: dict, slot: int | None, node_id: str | None = None,
             desired_state: TaskState = TaskState.RUNNING) -> dict:
    spec = service["spec"]
    return {"id": new_id(), "service_id": service["id"], "service_name": spec["name"],
            "slot": slot, "node_id": node_id, "spec": spec, "service_version": service["version"],
            "desired_state": int(desired_state), "created_at": now(),
            "assigned_generic": {},
            "status": {"state": int(TaskState.NEW), "message": "created", "err": "",
                       "timestamp": now(), "container_id": "", "exit_code": None}}


def task_name(task: dict) -> str:
    suffix = task["slot"] if task.get("slot") is not None else task.get("node_id")
    return f"{task['service_name']}.{suffix}"


def status_patch(task_id: str, state: TaskState, message: str, err: str = "", **extra) -> dict:
    """A store op that moves a task forward to `state`; a no-op if it is already there or past."""
    values = {"status.state": int(state), "status.message": message, "status.err": err,
              "status.timestamp": now()}
    values.update({f"status.{k}": v for k, v in extra.items()})
    return {"op": "patch", "kind": "tasks", "id": task_id, "set": values,
            "if_lt": {"status.state": int(state)}, "skip_missing": True}
