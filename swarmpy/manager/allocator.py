"""The allocator gives tasks what they need before they are scheduled, as in SwarmKit:
an address on each of their networks, then moves them from NEW to PENDING.  It also
keeps a VIP per service per network and an address per node per network (the node's
bridge gateway, where its resolver listens), and frees those nobody holds any more.

Every address is taken from what the store says is in use (networks.taken_addrs), so
a new leader continues where the old one stopped, and nothing is handed out twice.
"""
from __future__ import annotations

from swarmpy.manager import networks as nets
from swarmpy.manager.component import Component
from swarmpy.models import TaskState, status_patch


class _LazyPools(dict):
    """A network's free addresses, worked out (over every task) only if one is needed."""

    def __init__(self, networks: dict, tasks: list[dict]) -> None:
        super().__init__()
        self.networks, self.tasks = networks, tasks

    def __missing__(self, network_id: str) -> nets.AddressPool:
        network = self.networks[network_id]
        pool = self[network_id] = nets.AddressPool(network, nets.taken_addrs(network, self.tasks))
        return pool


class Allocator(Component):
    name = "allocator"

    def note(self, events) -> bool:
        return any(self._relevant(e) for e in events)

    def _relevant(self, e) -> bool:
        if e.kind in ("networks", "nodes"):
            return True
        if e.kind == "services":      # one on a network, or one that had a VIP to free
            return nets.on_networks(e.obj["spec"]) or any(
                e.obj["id"] in n.get("vips", {}) for n in self.store.list("networks"))
        if e.kind != "tasks":
            return False
        state = e.obj["status"]["state"]
        # Every new task; and a task on networks placed on a node (the node's address there)
        # or ended (its addresses, and maybe its node's, are free).
        return state == TaskState.NEW or bool(e.obj.get("networks")) and (
            e.action == "delete" or state == TaskState.ASSIGNED or state > TaskState.RUNNING)

    async def reconcile(self, full: bool) -> None:
        tasks = self.store.list("tasks")
        networks = {n["id"]: dict(n, node_addrs=dict(n.get("node_addrs", {})), vips=dict(n.get("vips", {})))
                    for n in self.store.list("networks")}
        pools = _LazyPools(networks, tasks)
        ops = self._task_ops(tasks, networks, pools)
        self._vips(networks, pools)
        self._node_addrs(tasks, networks, pools)
        for nid, network in networks.items():
            stored = self.store.get("networks", nid)
            if (network["node_addrs"], network["vips"]) != (stored.get("node_addrs", {}), stored.get("vips", {})):
                ops.append({"op": "update", "kind": "networks", "obj": network, "expect": stored["version"]})
        if ops:
            await self.store.commit(ops)

    def _task_ops(self, tasks: list[dict], networks: dict, pools: dict) -> list[dict]:
        ops = []
        for task in tasks:
            if task["status"]["state"] != TaskState.NEW or task["desired_state"] > TaskState.RUNNING:
                continue
            wanted = nets.task_network_ids(self.store, task["spec"])
            if any(nid not in networks for nid in wanted):
                continue            # removed meanwhile; the service's check ops make this rare
            attachments = [{"network_id": nid, "addr": pools[nid].take()} for nid in wanted]
            full = [networks[a["network_id"]]["spec"]["name"] for a in attachments if a["addr"] is None]
            if full:
                # Stays NEW (as in SwarmKit) until an address is free; its status says why.
                for a in attachments:
                    if a["addr"] is not None:
                        pools[a["network_id"]].taken.discard(a["addr"])
                err = f"no free address in network {full[0]}; remove tasks from it or use a larger --subnet"
                if task["status"].get("err") != err:
                    ops.append({"op": "patch", "kind": "tasks", "id": task["id"], "skip_missing": True,
                                "set": {"status.err": err, "status.message": "pending address allocation"}})
                continue
            op = status_patch(task["id"], TaskState.PENDING, "pending task scheduling")
            if attachments:
                op["set"]["networks"] = attachments
            ops.append(op)
        return ops

    def _vips(self, networks: dict, pools: dict) -> None:
        wanted: dict[str, set[str]] = {nid: set() for nid in networks}
        for service in self.store.list("services"):
            if service["spec"].get("endpoint_mode", "vip") != "vip":
                continue
            for nid in nets.task_network_ids(self.store, service["spec"]):
                if nid in wanted:
                    wanted[nid].add(service["id"])
        for nid, network in networks.items():
            vips = network["vips"]
            for service_id in list(vips):
                if service_id not in wanted[nid]:
                    del vips[service_id]
            for service_id in sorted(wanted[nid] - set(vips)):
                addr = pools[nid].take()
                if addr is not None:
                    vips[service_id] = addr

    def _node_addrs(self, tasks: list[dict], networks: dict, pools: dict) -> None:
        """A node has an address on a network while a task of it is there and not yet
        stopped; on ingress, every node has one while any service publishes an ingress
        port (the mesh answers on every node).  Without one the node takes the network down."""
        nodes = {n["id"] for n in self.store.list("nodes")}
        wanted: dict[str, set[str]] = {nid: set() for nid in networks}
        for task in tasks:
            if task.get("node_id") in nodes and TaskState.ASSIGNED <= task["status"]["state"] <= TaskState.RUNNING:
                for attachment in task.get("networks") or []:
                    if attachment["network_id"] in wanted:
                        wanted[attachment["network_id"]].add(task["node_id"])
        ingress = next((nid for nid, n in networks.items() if n["spec"].get("ingress")), None)
        if ingress and any(nets.ingress_ports(s["spec"]) for s in self.store.list("services")):
            wanted[ingress] |= nodes
        for nid, network in networks.items():
            addrs = network["node_addrs"]
            for node_id in list(addrs):
                if node_id not in wanted[nid]:
                    del addrs[node_id]
            for node_id in sorted(wanted[nid] - set(addrs)):
                addr = pools[nid].take()
                if addr is not None:
                    addrs[node_id] = addr
