"""Stacks on the manager: a stack is the services labelled com.docker.stack.namespace=NAME.

Docker's CLI deploys a stack one service call at a time, so a bad service half-way
leaves the stack half-deployed. Here the CLI converts the compose files (as docker's
does: files and environment are the client's) and sends the whole stack; every spec
is validated first and the network, secret and config creates and the service creates,
updates and prunes go in one transaction.  Services whose spec did not change are not
written at all, so their tasks stay; a stack's network that exists is left as it is
(docker's createNetworks).
"""
from __future__ import annotations

import base64
import re

from raft.errors import ConflictError, ExistsError, NotFoundError
from raft.store import ClusterStore
from swarmpy.manager import networks, secrets
from swarmpy.manager.controlapi import removal_ops, respec_op
from swarmpy.manager.refs import resolve_stored
from swarmpy.models import new_service, to_dict
from swarmpy.spec import SpecError, parse_service_spec

NAMESPACE_LABEL = "com.docker.stack.namespace"
_STACK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def stack_services(store: ClusterStore, namespace: str) -> list[dict]:
    return [s for s in store.list("services") if s["spec"]["labels"].get(NAMESPACE_LABEL) == namespace]


def stack_networks(store: ClusterStore, namespace: str) -> list[dict]:
    return sorted((n for n in store.list("networks")
                   if (n["spec"].get("labels") or {}).get(NAMESPACE_LABEL) == namespace),
                  key=lambda n: n["spec"]["name"])


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
    """Create the stack's missing networks, create or update its secrets, configs and
    services (with prune, remove the services that left) in one commit. `objects`: {"secrets": [...], "configs": [...]},
    each {name, labels, data (base64)} to create, or {name, external: true}; and
    "networks": [...], each a POST /networks body to create, or {name, external: true}."""
    if not isinstance(namespace, str) or not _STACK_NAME.fullmatch(namespace):
        raise SpecError("name", f"{namespace!r} is not a valid stack name; use letters, digits, "
                                "'_', '.', '-', starting with a letter or digit")
    parsed = _parse(namespace, specs)
    result: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "removed": []}
    if not isinstance(objects or {}, dict):
        raise SpecError("objects", "must be an object with networks, secrets and configs lists")
    ops, planned = _network_ops(store, namespace, (objects or {}).get("networks"), result)
    object_ops, created = _object_ops(store, sealer, objects or {}, result)
    ops += object_ops
    ops += _service_ops(store, namespace, parsed, prune, created, planned, result)
    if ops:
        await store.commit(ops)
    return result


def _network_ops(store: ClusterStore, namespace: str, items, result: dict) -> tuple[list, dict[str, dict]]:
    """Create ops for the stack's networks that do not exist yet, and {name: object} of those
    created.  An external network must exist (docker's text); a stack's network that exists is
    left as it is, also when its settings in the file changed (docker's createNetworks)."""
    if items is None:
        items = []
    if not isinstance(items, list):
        raise SpecError("networks", "must be a list of network bodies or {name, external: true}")
    ops: list[dict] = []
    planned: dict[str, dict] = {}
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise SpecError(f"networks[{i}]", "must be an object with a name")
        if item.get("external"):
            try:
                resolve_stored(store, "networks", name, "network")
            except NotFoundError:
                raise NotFoundError(f'network "{name}" is declared as external, but could not be found. You '
                                    "need to create a swarm-scoped network before the stack is deployed") from None
            continue
        current = store.by_name("networks", name)
        if current is not None:
            if (current["spec"].get("labels") or {}).get(NAMESPACE_LABEL) != namespace:
                raise ExistsError(f"failed to create network {name}: network with name {name} already exists "
                                  f"and is not part of stack {namespace}; declare it external: true to use it")
            continue
        if name in planned:
            raise SpecError(f"networks[{i}] ({name})", "appears twice in the stack")
        if item.get("ingress"):
            raise SpecError(f"networks[{i}] ({name}).ingress", "a stack cannot create the ingress network")
        body = {k: v for k, v in item.items() if k != "external"}
        labels = item.get("labels") or {}
        body["labels"] = {**labels, NAMESPACE_LABEL: namespace} if isinstance(labels, dict) else labels
        try:
            network = networks.new_network(store, body, planned=list(planned.values()))
        except SpecError as exc:
            problem = str(exc).split(f"{exc.field}: ", 1)[-1]
            raise SpecError(f"networks[{i}] ({name}).{exc.field}", problem) from None
        except ConflictError as exc:
            raise ConflictError(f"failed to create network {name}: {exc}") from None
        planned[name] = network
        ops.append({"op": "create", "kind": "networks", "obj": network})
        result["created"].append(f"network {name}")
    return ops, planned


def _network_checks(store: ClusterStore, spec: dict, planned: dict[str, dict]) -> list[dict]:
    """Name each of the service's networks by id, as the control API does (and with its checks:
    the network exists at commit, ingress and dnsrr rules); a network this transaction creates
    is named by its new id and needs no check."""
    attachments = spec.get("networks") or []
    existing = [a for a in attachments if a["target"] not in planned]
    checks = networks.resolve_targets(store, dict(spec, networks=existing))   # sets their targets
    for attachment in attachments:
        if attachment["target"] in planned:
            attachment["target"] = planned[attachment["target"]]["id"]
    targets = [a["target"] for a in attachments]
    if len(set(targets)) != len(targets):
        raise SpecError("networks", "a network is attached twice")
    return checks


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
                 planned: dict[str, dict], result: dict) -> list[dict]:
    existing = {s["spec"]["name"]: s for s in stack_services(store, namespace)}
    ops: list[dict] = []
    for spec in parsed:
        current = existing.pop(spec.name, None)
        new = to_dict(spec)
        try:
            checks = _network_checks(store, new, planned)
        except SpecError as exc:
            problem = str(exc).split(f"{exc.field}: ", 1)[-1]
            raise SpecError(f"{spec.name}.{exc.field}", problem) from None
        if current is not None and new == current["spec"]:
            result["unchanged"].append(f"service {spec.name}")
            continue
        ops += checks + secrets.reference_checks(store, new, created)
        if current is None:
            if store.by_name("services", spec.name) is not None:
                raise ExistsError(f"name conflicts with an existing object: service {spec.name} "
                                  f"already exists and is not part of stack {namespace}")
            ops.append({"op": "create", "kind": "services", "obj": dict(new_service(spec), spec=new)})
            result["created"].append(f"service {spec.name}")
            continue
        if new["mode"] != current["spec"]["mode"]:
            raise SpecError(f"{spec.name}.mode", f"service mode change is not allowed (service "
                                                 f"{spec.name} is {current['spec']['mode']}); "
                                                 "remove the stack's service first")
        ops.append(respec_op(store, current, new))
        result["updated"].append(f"service {spec.name}")
    if prune:
        for name, service in sorted(existing.items()):
            ops += removal_ops(store, service)
            result["removed"].append(f"service {name}")
    return ops


async def remove(store: ClusterStore, namespace: str) -> list[str]:
    """Remove the stack's services, then its secrets, configs and networks (docker's order),
    in one commit; a secret or network another stack's service uses stays refused."""
    ops, removed = _removal(store, namespace)
    await store.commit(ops)
    return removed


def _removal(store: ClusterStore, namespace: str) -> tuple[list[dict], list[str]]:
    services = stack_services(store, namespace)
    stack_names = {s["spec"]["name"] for s in services}
    # docker's order: services, then secrets, then configs, then networks
    owned = [(kind, o) for kind, key in secrets.KINDS.items()
             for o in sorted(store.list(key), key=lambda o: o["spec"]["name"])
             if o["spec"]["labels"].get(NAMESPACE_LABEL) == namespace]
    nets = stack_networks(store, namespace)
    if not services and not owned and not nets:
        raise NotFoundError(f"Nothing found in stack: {namespace}")
    ops = [op for service in services for op in removal_ops(store, service)]
    ops += [secrets.removal_op(store, kind, o, ignoring=stack_names) for kind, o in owned]
    ops += [networks.removal_op(store, n, ignoring=stack_names) for n in nets]
    return ops, ([f"service {n}" for n in sorted(stack_names)]
                 + [f"{kind} {o['spec']['name']}" for kind, o in owned]
                 + [f"network {n['spec']['name']}" for n in nets])
