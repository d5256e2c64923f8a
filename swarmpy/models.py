"""The data model: specs as dataclasses, stored objects as their dict form.

The store keeps plain dicts (msgpack-encodable); `to_dict`/`from_dict` convert.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import secrets
import time
import types
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
class Ulimit:
    name: str                  # nofile, nproc, core, ... (as `ulimit`)
    soft: int
    hard: int


@dataclass
class Healthcheck:
    # Docker's forms: [] inherit the image's, ["NONE"], ["CMD", arg...], ["CMD-SHELL", "command"].
    test: list[str] = field(default_factory=list)
    interval: float = 0.0      # seconds; 0 = the engine's default (30 s)
    timeout: float = 0.0       # 0 = 30 s
    start_period: float = 0.0  # 0 = none
    start_interval: float = 0.0
    retries: int = 0           # 0 = 3


@dataclass
class LogDriver:
    name: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Mount:
    target: str
    type: str = "volume"                          # volume | bind | tmpfs
    source: str = ""                              # volume name (empty: anonymous) or host path
    read_only: bool = False
    consistency: str = ""                         # default | consistent | cached | delegated
    bind_propagation: str = ""                    # rprivate, private, rshared, shared, rslave, slave
    volume_nocopy: bool = False
    volume_labels: dict[str, str] = field(default_factory=dict)
    volume_driver: str = ""
    volume_driver_options: dict[str, str] = field(default_factory=dict)
    tmpfs_size_bytes: int = 0                     # 0: unlimited
    tmpfs_mode: int = 0                           # e.g. 0o1777; 0: the engine's default


@dataclass
class PortConfig:
    target: int
    published: int = 0                            # 0: none chosen (the engine picks one)
    protocol: str = "tcp"                         # tcp | udp | sctp
    mode: str = "ingress"                         # ingress | host


@dataclass
class UpdateConfig:
    # SwarmKit's defaults.  Only `parallelism` is acted on so far (the updater in
    # swarmpy/manager/orchestrator/slots.py); the rest is stored for it.
    parallelism: int = defaults.UPDATE_PARALLELISM
    delay: float = defaults.UPDATE_DELAY_S
    failure_action: str = defaults.UPDATE_FAILURE_ACTION  # pause | continue | rollback
    monitor: float = defaults.UPDATE_MONITOR_S
    max_failure_ratio: float = defaults.UPDATE_MAX_FAILURE_RATIO
    order: str = defaults.UPDATE_ORDER                     # stop-first | start-first


@dataclass
class FileRef:
    """A secret or config a service's containers see as a file (docker's SecretReference /
    ConfigReference): secrets at /run/secrets/TARGET on tmpfs, configs at /TARGET or an
    absolute TARGET. The source is the object's name; the manager checks that it exists."""
    source: str
    target: str = ""                       # empty: the source's name
    uid: str = "0"
    gid: str = "0"
    mode: int = 0o444


@dataclass
class NetworkAttachment:
    """A service's place on an overlay network: the network (its id once stored; a name or
    id as given) and the extra names its tasks answer to there."""
    target: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class ServiceSpec:
    name: str
    image: str
    command: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    container_labels: dict[str, str] = field(default_factory=dict)
    mode: str = "replicated"            # replicated | global | replicated-job | global-job
    max_concurrent: int = 0             # replicated-job: tasks at once (0: replicas); replicas = completions
    replicas: int = defaults.REPLICAS
    constraints: list[str] = field(default_factory=list)
    preferences: list[str] = field(default_factory=list)     # "spread=node.labels.zone"
    max_replicas_per_node: int = 0
    reservations: Resources = field(default_factory=Resources)
    limits: Resources = field(default_factory=Resources)
    restart_policy: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace_period: float = defaults.STOP_GRACE_PERIOD_S
    pull: str = defaults.PULL_POLICY                          # always | missing | never
    update_config: UpdateConfig = field(default_factory=UpdateConfig)
    rollback_config: UpdateConfig = field(default_factory=UpdateConfig)
    # Docker's ContainerSpec, beyond image, command (its Args), env and labels.
    entrypoint: list[str] = field(default_factory=list)     # docker's ContainerSpec.Command
    hostname: str = ""
    user: str = ""
    working_dir: str = ""
    stop_signal: str = ""
    tty: bool = False
    open_stdin: bool = False
    read_only: bool = False
    init: bool | None = None                                  # None: the engine's default
    hosts: list[str] = field(default_factory=list)           # "IP HOST [ALIAS...]", as /etc/hosts
    dns_nameservers: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: list[Ulimit] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    healthcheck: Healthcheck | None = None                    # None: the image's
    log_driver: LogDriver | None = None                       # None: the engine's default
    mounts: list[Mount] = field(default_factory=list)
    ports: list[PortConfig] = field(default_factory=list)
    secrets: list[FileRef] = field(default_factory=list)
    configs: list[FileRef] = field(default_factory=list)
    networks: list[NetworkAttachment] = field(default_factory=list)
    endpoint_mode: str = "vip"                                # vip | dnsrr


def to_dict(obj) -> dict:
    """dataclasses.asdict for our JSON-like models, without its deep copy of every leaf
    (it was a sixth of the leader's time per service write): containers are rebuilt, so
    the result shares nothing mutable with `obj`, and scalars are shared as they are."""
    return _dict_maker(type(obj))(obj)


@functools.cache
def _dict_maker(cls):
    """One function per model, written out field by field as dataclasses writes __init__:
    half the time of a loop over the fields (a ServiceSpec has 45), on every write. A field
    annotated as a list or map of scalars is copied shallowly (its items are taken to be
    what the annotation says: spec.py checks them), and a nested model goes straight to its
    own function; a value of another type than its annotation takes the general path."""
    namespace = {"scalars": _SCALARS, "plain": plain}
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):
        hints = {}
    items = ", ".join(f"{f.name!r}: {_field_expr(f.name, hints.get(f.name), namespace)}"
                      for f in dataclasses.fields(cls))
    exec(f"def to_dict(obj):\n    return {{{items}}}\n", namespace)
    return namespace["to_dict"]


def _field_expr(name: str, hint, namespace: dict) -> str:
    """The expression that copies `obj.<name>` into the dict form, by its annotation."""
    value = f"(v := obj.{name})"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and args and args[0] in _SCALARS:
        return f"([*v] if type({value}) is list else plain(v))"
    if origin is dict and len(args) == 2 and args[1] in _SCALARS:
        return f"({{**v}} if type({value}) is dict else plain(v))"
    if dataclasses.is_dataclass(hint):
        model = _bind_model(hint, namespace)
        return f"(to_{model}(v) if type({value}) is {model} else plain(v))"
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        model = _bind_model(args[0], namespace)
        return (f"([to_{model}(x) if type(x) is {model} else plain(x) for x in v] "
                f"if type({value}) is list else plain(v))")
    return f"(v if type({value}) in scalars else plain(v))"


def _bind_model(model: type, namespace: dict) -> str:
    namespace[model.__name__] = model
    namespace[f"to_{model.__name__}"] = _dict_maker(model)
    return model.__name__


def plain(value):
    """One value's dict form, as to_dict writes a field: containers rebuilt, models as dicts."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return [plain(v) for v in value] if value else []
    if kind is dict:
        return {k: plain(v) for k, v in value.items()} if value else {}
    if kind is tuple:
        return tuple(plain(v) for v in value)
    if hasattr(kind, "__dataclass_fields__"):
        return to_dict(value)
    return copy.deepcopy(value)


_SCALARS = frozenset({str, int, float, bool, type(None), bytes})


def from_dict(cls, data: dict):
    """Build a dataclass from its dict form, recursing into dataclass fields.  Unknown keys
    are ignored and missing ones take their defaults, so older stored specs still load."""
    kwargs = {}
    for name, convert in _converters(cls):
        if name in data:
            value = data[name]
            kwargs[name] = convert(value) if convert is not None and value is not None else value
    return cls(**kwargs)


@functools.cache
def _converters(cls) -> tuple:
    # Resolved once per class: get_type_hints re-evaluates annotations on every call, and
    # from_dict is on the leader's write path.
    hints = typing.get_type_hints(cls)
    return tuple((f.name, _converter(hints[f.name])) for f in dataclasses.fields(cls))


def _converter(hint):
    """How to rebuild a field of type `X`, `X | None` or `list[X]` (X a dataclass); None: as is."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return _converter(inner[0]) if len(inner) == 1 else None
    if dataclasses.is_dataclass(hint):
        return lambda v: from_dict(hint, v) if isinstance(v, dict) else v
    if typing.get_origin(hint) is list and args and dataclasses.is_dataclass(args[0]):
        return lambda v: [from_dict(args[0], x) if isinstance(x, dict) else x for x in v] \
            if isinstance(v, list) else v
    return None


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
