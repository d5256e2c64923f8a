"""Stacks on the manager: a stack is the services labelled com.docker.stack.namespace=NAME.

Docker's CLI deploys a stack one service call at a time, so a bad service half-way
leaves the stack half-deployed. Here the CLI converts the compose files (as docker's
does: files and environment are the client's) and sends the whole stack; every spec
is validated first and the creates, updates and prunes go in one transaction.
Services whose spec did not change are not written at all, so their tasks stay.
"""
from __future__ import annotations

import re

from raft.errors import ExistsError, NotFoundError
from raft.store import ClusterStore
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


async def deploy(store: ClusterStore, namespace, specs, prune: bool = False) -> dict:
    """Create, update (and with prune, remove) the stack's services in one commit."""
    if not isinstance(namespace, str) or not _STACK_NAME.fullmatch(namespace):
        raise SpecError("name", f"{namespace!r} is not a valid stack name; use letters, digits, "
                                "'_', '.', '-', starting with a letter or digit")
    parsed = _parse(namespace, specs)
    existing = {s["spec"]["name"]: s for s in stack_services(store, namespace)}
    ops: list[dict] = []
    result: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "removed": []}
    for spec in parsed:
        current = existing.pop(spec.name, None)
        if current is None:
            if store.by_name("services", spec.name) is not None:
                raise ExistsError(f"name conflicts with an existing object: service {spec.name} "
                                  f"already exists and is not part of stack {namespace}")
            ops.append({"op": "create", "kind": "services", "obj": new_service(spec)})
            result["created"].append(spec.name)
            continue
        new = to_dict(spec)
        if new == current["spec"]:
            result["unchanged"].append(spec.name)
            continue
        if new["mode"] != current["spec"]["mode"]:
            raise SpecError(f"{spec.name}.mode", f"service mode change is not allowed (service "
                                                 f"{spec.name} is {current['spec']['mode']}); "
                                                 "remove the stack's service first")
        ops.append({"op": "update", "kind": "services", "expect": current["version"],
                    "obj": respecified(store, current, new)})
        result["updated"].append(spec.name)
    if prune:
        for name, service in sorted(existing.items()):
            ops += removal_ops(store, service)
            result["removed"].append(name)
    if ops:
        await store.commit(ops)
    return result


async def remove(store: ClusterStore, namespace: str) -> list[str]:
    services = stack_services(store, namespace)
    if not services:
        raise NotFoundError(f"Nothing found in stack: {namespace}")
    ops = [op for service in services for op in removal_ops(store, service)]
    await store.commit(ops)
    return sorted(s["spec"]["name"] for s in services)
