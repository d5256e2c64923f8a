"""swarmpy/manager/networks.py and allocator.py over a real in-memory `Tables`: subnets,
task addresses, VIPs and node addresses as the leader writes them, and the views the
dispatcher sends each node."""
from __future__ import annotations

import asyncio
import ipaddress

import pytest

from raft.errors import ConflictError
from raft.tables import Tables
from swarmpy.manager import networks as nets
from swarmpy.manager.allocator import Allocator
from swarmpy.models import NetworkAttachment, PortConfig, ServiceSpec, TaskState, new_service, new_task, to_dict
from swarmpy.spec import SpecError

RUNNING = int(TaskState.RUNNING)


class TablesStore:
    """The slice of ClusterStore the allocator and networks.py use, over one Tables."""

    def __init__(self) -> None:
        self.tables = Tables()

    def get(self, kind, obj_id):
        return self.tables.get(kind, obj_id)

    def by_name(self, kind, name):
        return self.tables.by_name(kind, name)

    def list(self, kind):
        return self.tables.list(kind)

    def commit_now(self, ops):
        result, _ = self.tables.apply(ops)
        if not result["ok"]:
            raise ConflictError(result.get("error", "refused"))
        return result

    async def commit(self, ops):
        return self.commit_now(ops)


@pytest.fixture
def store() -> TablesStore:
    s = TablesStore()
    s.commit_now([{"op": "create", "kind": "cluster", "obj": {
        "id": "default", "network": {"default_addr_pool": ["10.20.0.0/16"], "subnet_size": 24}}},
        {"op": "create", "kind": "networks", "obj": nets.ingress_object(["10.20.0.0/16"], 24)}])
    for node in ("n1", "n2"):
        s.commit_now([{"op": "create", "kind": "nodes", "obj": {
            "id": node, "spec": {"role": "worker"}, "status": {"state": "ready", "addr": f"10.77.0.{node[1]}"}}}])
    return s


def network(store, name, **body) -> dict:
    obj = nets.new_network(store, {"name": name, **body})
    store.commit_now([{"op": "create", "kind": "networks", "obj": obj}])
    return store.get("networks", obj["id"])


def service(store, name, networks=(), ports=(), **fields) -> dict:
    spec = ServiceSpec(name=name, image="busybox",
                       networks=[NetworkAttachment(target=n, aliases=[f"{name}-alias"]) for n in networks],
                       ports=[PortConfig(target=80, published=p) for p in ports], **fields)
    svc = new_service(spec)
    checks = nets.resolve_targets(store, svc["spec"])
    store.commit_now(checks + [{"op": "create", "kind": "services", "obj": svc}])
    return store.get("services", svc["id"])


def add_tasks(store, svc, count, node=None) -> list[dict]:
    tasks = [new_task(svc, slot) for slot in range(1, count + 1)]
    store.commit_now([{"op": "create", "kind": "tasks", "obj": t} for t in tasks])
    return [store.get("tasks", t["id"]) for t in tasks]


def allocate(store) -> None:
    asyncio.run(Allocator(store).reconcile(True))


def set_state(store, task, state, node="n1"):
    store.commit_now([{"op": "patch", "kind": "tasks", "id": task["id"],
                       "set": {"status.state": int(state), "node_id": node}}])


def test_subnets_come_from_the_pool_in_order_and_never_overlap(store):
    a, b = network(store, "a"), network(store, "b")
    assert (store.list("networks")[0]["subnet"], a["subnet"], b["subnet"]) == \
        ("10.20.0.0/24", "10.20.1.0/24", "10.20.2.0/24")
    assert len({n["vni"] for n in store.list("networks")}) == 3
    fixed = network(store, "fixed", subnet="10.20.3.0/24")
    assert fixed["subnet"] == "10.20.3.0/24"
    assert network(store, "after")["subnet"] == "10.20.4.0/24"
    with pytest.raises(ConflictError, match="overlaps with network fixed"):
        nets.new_network(store, {"name": "x", "subnet": "10.20.3.128/25"})
    with pytest.raises(SpecError, match="invalid network spec: driver"):
        nets.new_network(store, {"name": "x", "driver": "bridge"})
    with pytest.raises(SpecError, match="options.multicast"):
        nets.new_network(store, {"name": "x", "options": {"multicast": "maybe"}})


def test_every_task_gets_a_unique_address_and_pending_in_one_write(store):
    net = network(store, "app")
    web = service(store, "web", networks=["app"])
    assert web["spec"]["networks"][0]["target"] == net["id"]      # names become ids
    tasks = add_tasks(store, web, 5)
    allocate(store)
    tasks = [store.get("tasks", t["id"]) for t in tasks]
    assert all(t["status"]["state"] == TaskState.PENDING for t in tasks)
    addrs = [t["networks"][0]["addr"] for t in tasks]
    vip = store.get("networks", net["id"])["vips"][web["id"]]
    assert len(set(addrs + [vip])) == 6
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network(net["subnet"]) for a in addrs)


def test_a_stopped_task_frees_its_address_and_a_new_allocator_continues(store):
    network(store, "app")
    web = service(store, "web", networks=["app"])
    first = add_tasks(store, web, 2)
    allocate(store)
    first = [store.get("tasks", t["id"]) for t in first]
    set_state(store, first[0], TaskState.FAILED)
    more = add_tasks(store, web, 3)
    allocate(store)                       # a fresh Allocator: state comes from the store only
    live = [store.get("tasks", t["id"]) for t in [first[1]] + more]
    addrs = [t["networks"][0]["addr"] for t in live]
    assert len(set(addrs)) == 4
    assert first[0]["networks"][0]["addr"] in addrs[1:]       # free again, and handed out again


def test_ingress_ports_join_ingress_and_give_every_node_an_address(store):
    web = service(store, "web", ports=[8080])
    [task] = add_tasks(store, web, 1)
    allocate(store)
    ingress = nets.ingress_network(store)
    task = store.get("tasks", task["id"])
    assert [a["network_id"] for a in task["networks"]] == [ingress["id"]]
    assert set(store.get("networks", ingress["id"])["node_addrs"]) == {"n1", "n2"}
    assert web["id"] in store.get("networks", ingress["id"])["vips"]


def test_a_node_has_an_address_only_while_it_runs_a_task_of_the_network(store):
    net = network(store, "app")
    web = service(store, "web", networks=["app"])
    [task] = add_tasks(store, web, 1)
    allocate(store)
    set_state(store, store.get("tasks", task["id"]), TaskState.ASSIGNED, node="n2")
    allocate(store)
    assert list(store.get("networks", net["id"])["node_addrs"]) == ["n2"]
    views = nets.network_views(store)
    assert [v["id"] for v in nets.node_views(store, "n2", views)] == [net["id"]]
    assert nets.node_views(store, "n1", views) == []
    set_state(store, store.get("tasks", task["id"]), TaskState.SHUTDOWN, node="n2")
    allocate(store)
    assert store.get("networks", net["id"])["node_addrs"] == {}


def test_views_hold_running_tasks_only_and_peers_by_underlay_address(store):
    net = network(store, "app")
    web = service(store, "web", networks=["app"], endpoint_mode="dnsrr")
    a, b = add_tasks(store, web, 2)
    allocate(store)
    set_state(store, store.get("tasks", a["id"]), TaskState.RUNNING, node="n1")
    set_state(store, store.get("tasks", b["id"]), TaskState.STARTING, node="n2")
    store.commit_now([{"op": "patch", "kind": "tasks", "id": a["id"], "set": {"desired_state": RUNNING}}])
    allocate(store)
    views = nets.network_views(store)
    [view] = nets.node_views(store, "n1", views)
    assert view["peers"] == ["10.77.0.2"] and view["addr"] == store.get("networks", net["id"])["node_addrs"]["n1"]
    [svc] = view["services"]
    assert (svc["name"], svc["aliases"], svc["endpoint_mode"], svc["vip"]) == ("web", ["web-alias"], "dnsrr", "")
    assert [t["id"] for t in svc["tasks"]] == [a["id"]]         # b is still starting
    # Told to stop: out of the rotation at once, before its container stops.
    store.commit_now([{"op": "patch", "kind": "tasks", "id": a["id"], "set": {"desired_state": int(TaskState.SHUTDOWN)}}])
    [view] = nets.node_views(store, "n1", nets.network_views(store))
    assert view["services"][0]["tasks"] == []


def test_removing_a_network_in_use_or_ingress_in_use_is_refused(store):
    net = network(store, "app")
    service(store, "user", networks=["app"])
    with pytest.raises(ConflictError, match="in use by service user"):
        nets.removal_op(store, net)
    service(store, "pub", ports=[8080])
    with pytest.raises(ConflictError, match="ingress network cannot be removed"):
        nets.removal_op(store, nets.ingress_network(store))


def test_service_networks_are_checked(store):
    with pytest.raises(Exception, match="network nosuch not found"):
        service(store, "lost", networks=["nosuch"])
    with pytest.raises(SpecError, match="ingress network is attached by publishing a port"):
        service(store, "bad", networks=["ingress"])
    with pytest.raises(SpecError, match="can't be used with dnsrr mode"):
        service(store, "rr", ports=[8080], endpoint_mode="dnsrr")


def test_pool_flags_are_checked():
    assert nets.parse_pool(["10.20.0.0/16"], 24) == (["10.20.0.0/16"], 24)
    assert nets.parse_pool([], 24) == (["10.0.0.0/8"], 24)
    with pytest.raises(SpecError, match="default-addr-pool"):
        nets.parse_pool(["10.20.0.0/33"], 24)
    with pytest.raises(SpecError, match="overlap"):
        nets.parse_pool(["10.20.0.0/16", "10.20.5.0/24"], 24)
    with pytest.raises(SpecError, match="mask-length"):
        nets.parse_pool(["10.20.0.0/16"], 12)


def test_an_attachable_network_keeps_its_upper_half_for_standalone_containers(store):
    net = network(store, "shared", attachable=True, subnet="10.20.9.0/28")
    assert nets.engine_range(net) == "10.20.9.8/29"
    assert nets.network_views(store)[net["id"]]["engine_range"] == "10.20.9.8/29"
    web = service(store, "web", networks=["shared"])
    add_tasks(store, web, 5)
    allocate(store)
    addrs = [a["addr"] for t in store.list("tasks") for a in t.get("networks") or []]
    addrs.append(store.get("networks", net["id"])["vips"][web["id"]])
    assert sorted(addrs, key=ipaddress.ip_address) == [f"10.20.9.{i}" for i in range(1, 7)]
    # Full (.7 is left out, .8 and up are the engine's): a new task waits as NEW and says why,
    # and tasks of other networks are allocated all the same.
    more = add_tasks(store, web, 1)[0]
    network(store, "app")
    other = add_tasks(store, service(store, "other", networks=["app"]), 1)[0]
    allocate(store)
    waiting = store.get("tasks", more["id"])
    assert waiting["status"]["state"] == TaskState.NEW and "no free address in network shared" in \
        waiting["status"]["err"]
    assert store.get("tasks", other["id"])["status"]["state"] == TaskState.PENDING
