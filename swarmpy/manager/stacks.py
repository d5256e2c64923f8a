"""Stacks on the manager: a stack is the services labelled com.docker.stack.namespace=NAME.

Docker's CLI deploys a stack one service call at a time, so a bad service half-way
leaves the stack half-deployed. Here the CLI converts the compose files (as docker's
does: files and environment are the client's) and sends the whole stack; every spec
is validated first and the creates, updates and prunes go in one transaction.
Services whose spec did not change are not written at all, so their tasks stay.
"""
from __future__ import annotations

import base64
import re

from raft.errors import ConflictError, ExistsError, NotFoundError
from raft.store import ClusterStore
from swarmpy.manager import secrets
from swarmpy.manager.controlapi import removal_ops, respecified
from swarmpy.models import new_service, to_dict
from swarmpy.spec import SpecError, parse_service_spec

NAMESPACE_LABEL = "com.docker.stack.namespace"
_STACK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def stack_services(store: ClusterStore, namespace: str) -> list[dict]:
    return [s for s in store.list("services") if s["spec"]["labels"].get(NAMESPACE_LABEL) == namespace]


def _parse(namespace: str, specs) -> list:
    if not isinstance(specs, list) or not specs:
        raise SpecError("services", "must be a non-empty list of service specs")
    parsed, names = [], set()
    for i, data in enumerate(specs):
        try:
            spec = parse_service_spec(data)
        except SpecError as exc:
            name = data.get("name") if isinstance(data, dict) else None
            problem = str(exc).split(f"{exc.field}: ", 1)[-1]
            raise SpecError(f"services[{i}]" + (f" ({name})" if name else "") + f".{exc.field}",
                            problem) from None
        if spec.labels.get(NAMESPACE_LABEL) != namespace or not spec.name.startswith(f"{namespace}_"):
            raise SpecError(f"services[{i}] ({spec.name})",
                            f"a service of stack {namespace} is named {namespace}_NAME and labelled "
                            f"{NAMESPACE_LABEL}={namespace}")
        if spec.name in names:
            raise SpecError(f"services[{i}] ({spec.name})", "appears twice in the stack")
        names.add(spec.name)
        parsed.append(spec)
    return parsed


async def deploy(store: ClusterStore, sealer: secrets.Sealer, namespace, specs, prune: bool = False,
                 objects: dict | None = None) -> dict:
    """Create or update the stack's secrets, configs and services (with prune, remove the
    services that left) in one commit. `objects`: {"secrets": [...], "configs": [...]},
    each {name, labels, data (base64)} to create, or {name, external: true}."""
    if not isinstance(namespace, str) or not _STACK_NAME.fullmatch(namespace):
        raise SpecError("name", f"{namespace!r} is not a valid stack name; use letters, digits, "
                                "'_', '.', '-', starting with a letter or digit")
    parsed = _parse(namespace, specs)
    result: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "removed": []}
    ops, created = _object_ops(store, sealer, objects or {}, result)
    ops += _service_ops(store, namespace, parsed, prune, created, result)
    if ops:
        await store.commit(ops)
    return result


def _object_ops(store: ClusterStore, sealer: secrets.Sealer, objects, result: dict) -> tuple[list, set]:
    if not isinstance(objects, dict):
        raise SpecError("objects", "must be an object with secrets and configs lists")
    ops, created = [], set()
    for kind, key in secrets.KINDS.items():
        for item in objects.get(key) or []:
            if isinstance(item, dict) and item.get("external"):
                continue        # must exist: the services' reference checks say so if not
            obj = secrets.new_object(kind, item, sealer)
            name = obj["spec"]["name"]
            current = store.by_name(key, name)
            if current is None:
                ops.append({"op": "create", "kind": key, "obj": obj})
                created.add((kind, name))
                result["created"].append(f"{kind} {name}")
            elif not _same_data(kind, current, item["data"], sealer):
                raise ConflictError(f"failed to update {kind} {name}: rpc error: code = InvalidArgument "
                                    "desc = only updates to Labels are allowed")
            elif current["spec"]["labels"] != obj["spec"]["labels"]:
                ops.append({"op": "patch", "kind": key, "id": current["id"], "expect": current["version"],
                            "set": {"spec.labels": obj["spec"]["labels"], "updated_at": obj["updated_at"]}})
                result["updated"].append(f"{kind} {name}")
    return ops, created


def _same_data(kind: str, current: dict, data_b64: str, sealer: secrets.Sealer) -> bool:
    stored = sealer.open(current["sealed"]) if kind == "secret" else base64.b64decode(current["data"])
    return stored == base64.b64decode(data_b64)


def _service_ops(store: ClusterStore, namespace: str, parsed: list, prune: bool, created: set,
                 result: dict) -> list[dict]:
    existing = {s["spec"]["name"]: s for s in stack_services(store, namespace)}
    ops: list[dict] = []
    for spec in parsed:
        current = existing.pop(spec.name, None)
        new = to_dict(spec)
        if current is not None and new == current["spec"]:
            result["unchanged"].append(f"service {spec.name}")
            continue
        ops += secrets.reference_checks(store, new, created)
        if current is None:
            if store.by_name("services", spec.name) is not None:
                raise ExistsError(f"name conflicts with an existing object: service {spec.name} "
                                  f"already exists and is not part of stack {namespace}")
            ops.append({"op": "create", "kind": "services", "obj": new_service(spec)})
            result["created"].append(f"service {spec.name}")
            continue
        if new["mode"] != current["spec"]["mode"]:
            raise SpecError(f"{spec.name}.mode", f"service mode change is not allowed (service "
                                                 f"{spec.name} is {current['spec']['mode']}); "
                                                 "remove the stack's service first")
        ops.append({"op": "update", "kind": "services", "expect": current["version"],
                    "obj": respecified(store, current, new)})
        result["updated"].append(f"service {spec.name}")
    if prune:
        for name, service in sorted(existing.items()):
            ops += removal_ops(store, service)
            result["removed"].append(f"service {name}")
    return ops


async def remove(store: ClusterStore, namespace: str) -> list[str]:
    """Remove the stack's services, then its secrets and configs (docker's order), in one
    commit; a secret another stack's service uses stays refused."""
    services = stack_services(store, namespace)
    stack_names = {s["spec"]["name"] for s in services}
    # docker's order: services, then secrets, then configs
    owned = [(kind, o) for kind, key in secrets.KINDS.items()
             for o in sorted(store.list(key), key=lambda o: o["spec"]["name"])
             if o["spec"]["labels"].get(NAMESPACE_LABEL) == namespace]
    if not services and not owned:
        raise NotFoundError(f"Nothing found in stack: {namespace}")
    ops = [op for service in services for op in removal_ops(store, service)]
    ops += [secrets.removal_op(store, kind, o, ignoring=stack_names) for kind, o in owned]
    await store.commit(ops)
    return ([f"service {n}" for n in sorted(stack_names)]
            + [f"{kind} {o['spec']['name']}" for kind, o in owned])
