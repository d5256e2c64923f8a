"""Overlay networks in the cluster state: validation, subnets, VNIs and addresses.

Everything here is a pure function of the store's contents, so the allocator (on the
leader) and the control API compute "what is taken" from replicated state, and an
address is never handed out twice, also across leader changes.  See docs/networks.md.
"""
from __future__ import annotations

import ipaddress
import re

from raft.errors import ConflictError
from raft.store import ClusterStore
from swarmpy import defaults
from swarmpy.manager.refs import resolve_stored
from swarmpy.models import TaskState, new_id, now
from swarmpy.spec import SpecError

DRIVERS = ("overlay",)
OPTIONS = ("multicast",)
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
INGRESS = "ingress"


class NetworkSpecError(SpecError):
    """A network create request's field is invalid: the message names it and the fix."""

    def __init__(self, field: str, problem: str) -> None:
        ValueError.__init__(self, f"invalid network spec: {field}: {problem}")
        self.field = field


# -- the cluster's address pool ---------------------------------------------------------
def parse_pool(pools: list[str], mask: int) -> tuple[list[str], int]:
    """`init --default-addr-pool` (repeatable) and `--default-addr-pool-mask-length`."""
    nets = []
    for text in pools or list(defaults.DEFAULT_ADDR_POOL):
        try:
            net = ipaddress.IPv4Network(text, strict=True)
        except ValueError as exc:
            raise SpecError("default-addr-pool", f"{text!r} is not an IPv4 CIDR such as 10.20.0.0/16 "
                                                 f"({exc})") from None
        if net.prefixlen > mask:
            raise SpecError("default-addr-pool-mask-length",
                            f"{mask} is shorter than the pool {text}'s own prefix; use {net.prefixlen} to 29")
        nets.append(str(net))
    if not 8 <= mask <= 29:
        raise SpecError("default-addr-pool-mask-length", f"{mask} is invalid; use 8 to 29 (default 24)")
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            if ipaddress.IPv4Network(a).overlaps(ipaddress.IPv4Network(b)):
                raise SpecError("default-addr-pool", f"pools {a} and {b} overlap; give pools that do not")
    return nets, mask


def cluster_pool(store: ClusterStore) -> tuple[list[str], int]:
    network = (store.get("cluster", "default") or {}).get("network") or {}
    return (network.get("default_addr_pool") or list(defaults.DEFAULT_ADDR_POOL),
            network.get("subnet_size") or defaults.DEFAULT_ADDR_POOL_MASK)


def next_subnet(pools: list[str], mask: int, used: list[str]) -> str:
    taken = [ipaddress.IPv4Network(u) for u in used]
    for pool in pools:
        for candidate in ipaddress.IPv4Network(pool).subnets(new_prefix=mask):
            if not any(candidate.overlaps(t) for t in taken):
                return str(candidate)
    raise ConflictError("rpc error: code = ResourceExhausted desc = could not find an available, "
                        "non-overlapping IPv4 address pool among the defaults to assign to the network; "
                        "give --subnet or a larger --default-addr-pool")


def next_vni(networks: list[dict]) -> int:
    used = {n.get("vni") for n in networks}
    vni = defaults.VNI_BASE
    while vni in used:
        vni += 1
    return vni


# -- network objects -------------------------------------------------------------------
def new_network(store: ClusterStore, body, planned: list[dict] = ()) -> dict:
    """Validate a create request and build the stored object, subnet and VNI included;
    `planned`: networks the same transaction creates before it (their subnets are taken)."""
    if not isinstance(body, dict):
        raise NetworkSpecError("network", "the body must be a JSON object with name, driver, subnet, attachable, "
                                   "internal, labels, options")
    unknown = set(body) - {"name", "driver", "subnet", "attachable", "internal", "labels", "options", "ingress"}
    if unknown:
        raise NetworkSpecError(sorted(unknown)[0], "unknown field; use name, driver, subnet, attachable, internal, "
                                            "labels, options")
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > 64:
        raise NetworkSpecError("name", f"invalid name {name!r}: use letters, digits, '_', '.', '-', starting "
                                "with a letter or digit")
    driver = body.get("driver") or "overlay"
    if driver not in DRIVERS:
        raise NetworkSpecError("driver", f"driver {driver!r} is not supported in a swarm; use overlay")
    options = body.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        raise NetworkSpecError("options", "must be a map of strings, e.g. {\"multicast\": \"false\"}")
    for key, value in options.items():
        if key not in OPTIONS:
            raise NetworkSpecError(f"options.{key}", f"unknown option; swarmpy's overlay takes {', '.join(OPTIONS)}")
        if value.lower() not in ("true", "false", "1", "0"):
            raise NetworkSpecError(f"options.{key}", f"{value!r} is invalid; use true or false")
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise NetworkSpecError("labels", "must be a map of strings to strings")
    flags = {}
    for flag in ("attachable", "internal", "ingress"):
        flags[flag] = body.get(flag, False)
        if not isinstance(flags[flag], bool):
            raise NetworkSpecError(flag, f"must be true or false, got {flags[flag]!r}")
    networks = store.list("networks") + list(planned)
    if flags["ingress"] and any(n["spec"].get("ingress") for n in networks):
        raise ConflictError("rpc error: code = AlreadyExists desc = an ingress network already exists; "
                            "remove it before creating another")
    subnet = _subnet(store, body.get("subnet"), networks)
    spec = {"name": name, "driver": driver, "subnet": body.get("subnet") or "", "labels": labels,
            "options": {k: v.lower() for k, v in options.items()}, **flags}
    return {"id": new_id(), "spec": spec, "subnet": subnet, "vni": next_vni(networks),
            "node_addrs": {}, "vips": {}, "created_at": now(), "updated_at": now()}


def _subnet(store: ClusterStore, asked, networks: list[dict]) -> str:
    if not asked:
        return next_subnet(*cluster_pool(store), [n["subnet"] for n in networks])
    try:
        net = ipaddress.IPv4Network(asked, strict=False)
    except (ValueError, TypeError):
        raise NetworkSpecError("subnet", f"invalid subnet {asked!r}: use an IPv4 CIDR such as 10.0.9.0/24") from None
    if net.prefixlen > 29:
        raise NetworkSpecError("subnet", f"{asked} is too small; use a /29 or larger")
    for other in networks:
        if net.overlaps(ipaddress.IPv4Network(other["subnet"])):
            raise ConflictError(f"rpc error: code = InvalidArgument desc = subnet {net} overlaps with network "
                                f"{other['spec']['name']} ({other['subnet']}); pick a subnet that does not")
    return str(net)


def ingress_object(pools: list[str], mask: int) -> dict:
    """The routing mesh's network, made with the cluster (as docker's `ingress`)."""
    spec = {"name": INGRESS, "driver": "overlay", "subnet": "", "labels": {}, "options": {},
            "attachable": False, "internal": False, "ingress": True}
    return {"id": new_id(), "spec": spec, "subnet": next_subnet(pools, mask, []), "vni": defaults.VNI_BASE,
            "node_addrs": {}, "vips": {}, "created_at": now(), "updated_at": now()}


def multicast(network: dict) -> bool:
    return network["spec"].get("options", {}).get("multicast", "true") in ("true", "1")


def public(network: dict) -> dict:
    """As `network inspect` shows it: docker's scope and IPAM config, our VNI."""
    return dict(network, scope="swarm", ipam={"driver": "default", "config": [
        {"subnet": network["subnet"], "gateway": ""}]})


def removal_op(store: ClusterStore, network: dict, ignoring: set[str] = frozenset()) -> dict:
    """Delete a network no service uses (but those named in `ignoring`, going in the same
    transaction).  No expected version: the allocator rewrites a network's addresses at any
    time, and a version read would only make the delete fail for that."""
    services = [s for s in store.list("services") if s["spec"]["name"] not in ignoring]
    users = [s for s in services if network["id"] in attached_ids(s["spec"])]
    if users:
        raise ConflictError(f"rpc error: code = FailedPrecondition desc = network {network['spec']['name']} is "
                            f"in use by service {users[0]['spec']['name']}; remove the service or its "
                            "--network first")
    if network["spec"].get("ingress") and any(ingress_ports(s["spec"]) for s in services):
        raise ConflictError("rpc error: code = FailedPrecondition desc = ingress network cannot be removed "
                            "because service(s) publish ports in ingress mode")
    return {"op": "delete", "kind": "networks", "id": network["id"]}


# -- services' attachments ------------------------------------------------------------------
def attached_ids(spec: dict) -> list[str]:
    return [a["target"] for a in spec.get("networks") or []]


def ingress_ports(spec: dict) -> list[dict]:
    return [p for p in spec.get("ports") or [] if p.get("mode", "ingress") == "ingress"]


def on_networks(spec: dict) -> bool:
    """Whether a service's tasks join any network (its own, or ingress for its ports)."""
    return bool(spec.get("networks")) or bool(ingress_ports(spec))


def changes_views(event) -> bool:
    """Whether a store event may change what some node is told of its networks."""
    if event.kind in ("networks", "nodes"):
        return True
    if event.kind == "services":
        return on_networks(event.obj["spec"])
    return event.kind == "tasks" and bool(event.obj.get("networks"))


def resolve_targets(store: ClusterStore, spec: dict) -> list[dict]:
    """Name each attachment's network by its id (as docker stores it) and return check ops,
    so that a network removed meanwhile fails the whole write."""
    checks, seen = [], set()
    for i, attachment in enumerate(spec.get("networks") or []):
        network = resolve_stored(store, "networks", attachment["target"], "network")
        if network["spec"].get("ingress"):
            raise SpecError(f"networks[{i}]", "the ingress network is attached by publishing a port; "
                                              "use --publish instead")
        if network["id"] in seen:
            raise SpecError(f"networks[{i}]", f"network {attachment['target']} is attached twice")
        seen.add(network["id"])
        attachment["target"] = network["id"]
        checks.append({"op": "check", "kind": "networks", "id": network["id"]})
    if ingress_ports(spec):
        ingress = ingress_network(store)
        if ingress is None:
            raise ConflictError("rpc error: code = FailedPrecondition desc = service needs ingress network, "
                                "but no ingress network is present; create one with "
                                "'swarmpy network create --ingress -d overlay ingress'")
        checks.append({"op": "check", "kind": "networks", "id": ingress["id"]})
    if ingress_ports(spec) and spec.get("endpoint_mode") == "dnsrr":
        raise SpecError("endpoint_mode", "port published with ingress mode can't be used with dnsrr mode; "
                                         "use --publish mode=host or --endpoint-mode vip")
    return checks


def task_network_ids(store: ClusterStore, spec: dict) -> list[str]:
    """The networks a task of this spec joins: its own, then ingress for ingress ports."""
    ids = list(attached_ids(spec))
    if ingress_ports(spec):
        ingress = ingress_network(store)
        if ingress is not None:
            ids.append(ingress["id"])
    return ids


def ingress_network(store: ClusterStore) -> dict | None:
    return next((n for n in store.list("networks") if n["spec"].get("ingress")), None)


# -- addresses ------------------------------------------------------------------------------
def taken_addrs(network: dict, tasks: list[dict]) -> set[str]:
    """Every address of the network in use: nodes', services' VIPs, and live tasks'.  A task
    keeps its address until it is terminal (its container may still answer before)."""
    taken = set(network.get("node_addrs", {}).values()) | set(network.get("vips", {}).values())
    for task in tasks:
        if task["status"]["state"] > TaskState.RUNNING:
            continue
        for attachment in task.get("networks") or []:
            if attachment["network_id"] == network["id"]:
                taken.add(attachment["addr"])
    return taken


def virtual_ips(store: ClusterStore, service: dict) -> list[dict]:
    """A service's VIPs as `service inspect` shows them (docker's Endpoint.VirtualIPs)."""
    out = []
    for network_id in task_network_ids(store, service["spec"]):
        network = store.get("networks", network_id)
        addr = (network or {}).get("vips", {}).get(service["id"])
        if addr:
            prefix = network["subnet"].split("/")[1]
            out.append({"network_id": network_id, "addr": f"{addr}/{prefix}"})
    return out


def engine_range(network: dict) -> str:
    """An attachable network's upper half: the engines give standalone containers (`docker
    run --network NET`) addresses from it, and the allocator never does."""
    if not network["spec"].get("attachable"):
        return ""
    net = ipaddress.IPv4Network(network["subnet"])
    return str(list(net.subnets(prefixlen_diff=1))[1])


class AddressPool:
    """Free addresses of one network, handed out in order, skipping those taken."""

    def __init__(self, network: dict, taken: set[str]) -> None:
        self.net = ipaddress.IPv4Network(network["subnet"])
        self.taken = set(taken)
        self._next = 1                  # .0 is the network; docker keeps .1 for a gateway we do not use
        reserved = engine_range(network)
        self._size = self.net.num_addresses // 2 if reserved else self.net.num_addresses

    def take(self) -> str | None:
        """The next free address; None when the network has none left."""
        size = self._size
        for _ in range(size):
            offset, self._next = self._next, self._next + 1
            if offset >= size - 1:
                self._next = 1
                continue
            addr = str(self.net.network_address + offset)
            if addr not in self.taken:
                self.taken.add(addr)
                return addr
        return None


# -- what each node is told ------------------------------------------------------------------
def network_views(store: ClusterStore) -> dict[str, dict]:
    """Per network, what every node on it needs: the services, their VIPs and the tasks in
    the rotation (running, so healthy where a healthcheck exists, and meant to run: a task
    told to stop leaves the rotation at once, before its container is stopped)."""
    views = {}
    services = store.list("services")
    for network in store.list("networks"):
        views[network["id"]] = {
            "id": network["id"], "name": network["spec"]["name"], "subnet": network["subnet"],
            "vni": network["vni"], "internal": bool(network["spec"].get("internal")),
            "engine_range": engine_range(network),
            "multicast": multicast(network), "ingress": bool(network["spec"].get("ingress")),
            "attachable": bool(network["spec"].get("attachable")),
            "services": [_service_view(store, network, s) for s in services
                         if network["id"] in task_network_ids(store, s["spec"])]}
    return views


def _service_view(store: ClusterStore, network: dict, service: dict) -> dict:
    spec, nid = service["spec"], network["id"]
    aliases = next((a.get("aliases") or [] for a in spec.get("networks") or [] if a["target"] == nid), [])
    tasks = []
    for task in store.tables.service_tasks(service["id"]):
        if task["status"]["state"] != TaskState.RUNNING or task["desired_state"] != TaskState.RUNNING:
            continue
        addr = next((a["addr"] for a in task.get("networks") or [] if a["network_id"] == nid), None)
        if addr:
            suffix = task["slot"] if task.get("slot") is not None else task.get("node_id")
            tasks.append({"id": task["id"], "name": f"{spec['name']}.{suffix}.{task['id']}",
                          "addr": addr, "node_id": task.get("node_id"),
                          "underlay": _underlay(store, task.get("node_id"))})
    tasks.sort(key=lambda t: t["addr"])
    return {"id": service["id"], "name": spec["name"], "aliases": list(aliases),
            "endpoint_mode": spec.get("endpoint_mode", "vip"),
            "vip": network.get("vips", {}).get(service["id"], ""),
            "ports": ingress_ports(spec) if network["spec"].get("ingress") else [], "tasks": tasks}


def node_views(store: ClusterStore, node_id: str, views: dict[str, dict]) -> list[dict]:
    """The networks this node takes part in (it has an address there), with its own
    address and the underlay addresses of the other nodes on each."""
    out = []
    for network in store.list("networks"):
        addrs = network.get("node_addrs", {})
        if node_id not in addrs or network["id"] not in views:
            continue
        gateways = {}           # the other nodes' addresses on the network -> their underlay address
        for other, addr in addrs.items():
            underlay = _underlay(store, other)
            if other != node_id and underlay:
                gateways[addr] = underlay
        out.append(dict(views[network["id"]], addr=addrs[node_id], peers=sorted(set(gateways.values())),
                        peer_gateways=gateways))
    return out


def _underlay(store: ClusterStore, node_id: str | None) -> str:
    """Where a node is reached from the others: the address its session came from."""
    node = store.get("nodes", node_id) if node_id else None
    return ((node or {}).get("status") or {}).get("addr") or ""
