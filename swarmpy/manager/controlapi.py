"""The control API: what users may do to the cluster state, checked before it is written.

Every call validates its input whole, then commits one transaction, so a bad
request stores nothing.  The HTTP layer only translates to and from JSON.
"""
from __future__ import annotations

from raft import wire
from raft.errors import ConflictError, ExistsError
from raft.store import ClusterStore
from swarmpy import ca
from swarmpy.manager import networks, secrets
from swarmpy.manager.orchestrator import jobs, updater
from swarmpy.manager.orchestrator.global_ import eligible_nodes
from swarmpy.manager.refs import resolve, resolve_stored
from swarmpy.models import TaskState, new_service, now
from swarmpy.spec import SpecError, parse_service_spec, parse_service_spec_dict

PUBLIC_CLUSTER_FIELDS = ("id", "created_at", "version")
AVAILABILITIES = ("active", "pause", "drain")


def respec_op(store: ClusterStore, service: dict, spec: dict, whole_spec: bool = False) -> dict:
    """The op that gives the service a new spec: the old one kept for rollback, and a
    rolling update started (in the same write) when the change reaches running tasks; with
    none, as in SwarmKit, there is nothing to update and no update_status to write. The
    old spec becomes previous_spec in the store (`copy`), and the entry sets only the spec's
    fields that changed (`spec_sets`): what every manager decodes per update is the change,
    not one or two whole specs. The op expects the version it was computed from; one sent
    with another version (`whole_spec`) must carry the whole spec."""
    values = {**({"spec": spec} if whole_spec else spec_sets(service["spec"], spec)), "updated_at": now()}
    # Jobs are not rolled: a changed job runs again from the start (orchestrator/jobs.py).
    live = not spec["mode"].endswith("-job") and any(
        t["desired_state"] <= TaskState.RUNNING for t in store.tables.service_tasks(service["id"]))
    status = updater.status_for_new_spec(service["spec"], spec) if live else None
    if status is not None:
        values["update_status"] = status
    return {"op": "patch", "kind": "services", "id": service["id"], "expect": service["version"],
            "copy": {"previous_spec": "spec"}, "set": values}


def spec_sets(stored: dict, spec: dict) -> dict:
    """The patch sets that turn the stored spec into `spec`: "spec.FIELD" for each field
    whose value or type differs, so a version-checked patch (it applies only to the spec it
    was computed from) stores exactly `spec`; the whole spec when a stored field is gone
    from `spec` (written by an older swarmpy), which a field-by-field patch would keep."""
    if stored.keys() - spec.keys():
        return {"spec": spec}
    return {f"spec.{field}": value for field, value in spec.items()
            if field not in stored or stored[field] != value or type(stored[field]) is not type(value)}


def removal_ops(store: ClusterStore, service: dict) -> list[dict]:
    """Delete a service (at the version read) and mark its tasks for removal."""
    ops = [{"op": "delete", "kind": "services", "id": service["id"], "expect": service["version"]}]
    ops += [{"op": "patch", "kind": "tasks", "id": t["id"], "skip_missing": True,
             "set": {"desired_state": int(TaskState.REMOVE)}}
            for t in store.tables.service_tasks(service["id"])]
    return ops


class ControlAPI:
    def __init__(self, store: ClusterStore, sealer: secrets.Sealer | None = None) -> None:
        self.store = store
        self.sealer = sealer

    # -- services -------------------------------------------------------------------
    def service(self, ref: str) -> dict:
        return resolve_stored(self.store, "services", ref, "service")

    async def create_service(self, data) -> dict:
        spec = parse_service_spec(data)
        if self.store.by_name("services", spec.name) is not None:
            raise ExistsError(f"name conflicts with an existing object: service {spec.name} already exists")
        service = new_service(spec)
        checks = networks.resolve_targets(self.store, service["spec"])
        checks += secrets.reference_checks(self.store, service["spec"])
        try:
            await self.store.commit(checks + [{"op": "create", "kind": "services", "obj": service}])
        except ExistsError:
            raise ExistsError(f"name conflicts with an existing object: service {spec.name} already exists")
        return self.store.get("services", service["id"])

    async def update_service(self, ref: str, version, data) -> dict:
        current = self.service(ref)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ConflictError("the update must name the version it read (?version=N); "
                                "read the service again and retry")
        new = parse_service_spec_dict(data)
        if new["name"] != current["spec"]["name"]:
            raise ConflictError("renaming a service is not supported")
        if new["mode"] != current["spec"]["mode"]:
            raise ConflictError(f"service mode change is not allowed (service {new['name']} is "
                                f"{current['spec']['mode']})")
        checks = networks.resolve_targets(self.store, new) + secrets.reference_checks(self.store, new)
        # The version the client read may be newer than this manager's copy (a follower
        # behind the leader): a patch of the changed fields is computed from this copy, so
        # it is sent only when the two are the same version; else the whole spec goes.
        op = respec_op(self.store, current, new, whole_spec=version != current["version"])
        await self.store.commit(checks + [dict(op, expect=version)])
        # As docker's API answers an update (its warnings only), plus the version a client
        # sends with its next update: not the whole service, which a busy leader would
        # encode and every client decode on each write (docs/benchmarks.md).
        updated = self.store.get("services", current["id"])
        return {"id": updated["id"], "version": updated["version"], "warnings": []}

    async def rollback_service(self, ref: str) -> dict:
        """`service rollback`: back to the previous spec, under the service's rollback_config."""
        current = self.service(ref)
        if not current.get("previous_spec"):
            raise ConflictError(f"service {current['spec']['name']} does not have a previous spec")
        # The two specs swap on each replica (`copy` reads the object as stored): the entry
        # carries neither.
        await self.store.commit([{"op": "patch", "kind": "services", "id": current["id"],
                                  "expect": current["version"], "copy": updater.SWAP_SPECS,
                                  "set": {"updated_at": now(), "update_status": updater.started(
                                      updater.ROLLBACK_STARTED, "manually requested rollback")}}])
        return self.store.get("services", current["id"])

    async def remove_service(self, ref: str) -> str:
        service = self.service(ref)
        await self.store.commit(removal_ops(self.store, service))
        return service["id"]

    def inspect_service(self, ref: str) -> dict:
        return self._with_endpoint(self.service(ref))

    def _with_endpoint(self, service: dict) -> dict:
        """As docker shows it: the endpoint's mode, published ports and VIPs."""
        spec = service["spec"]
        return dict(service, endpoint={"mode": spec.get("endpoint_mode", "vip"), "ports": spec.get("ports", []),
                                       "virtual_ips": networks.virtual_ips(self.store, service)})

    def list_services(self) -> list[dict]:
        nodes = self.store.list("nodes")
        return [dict(self._with_endpoint(s), replicas_status=self._replicas(s, nodes))
                for s in self.store.list("services")]

    def _replicas(self, service: dict, nodes: list[dict]) -> dict:
        tasks = self.store.tables.service_tasks(service["id"])
        running = sum(1 for t in tasks if t["status"]["state"] == TaskState.RUNNING
                      and t["desired_state"] == TaskState.RUNNING)
        mode = service["spec"]["mode"]
        if mode == "replicated-job":
            total = service["spec"]["replicas"]
            return dict(jobs.progress(service, tasks),
                        desired=min(total, service["spec"].get("max_concurrent") or total))
        if mode == "global-job":
            eligible = len(eligible_nodes(service, nodes))
            return dict(jobs.progress(service, tasks), desired=eligible, total=eligible)
        if mode == "global":
            desired = len(eligible_nodes(service, nodes))
        else:
            desired = service["spec"]["replicas"]
        return {"running": running, "desired": desired}

    # -- networks ---------------------------------------------------------------------
    def network(self, ref: str) -> dict:
        return resolve_stored(self.store, "networks", ref, "network")

    async def create_network(self, body) -> dict:
        network = networks.new_network(self.store, body)
        try:
            await self.store.commit([{"op": "create", "kind": "networks", "obj": network}])
        except ExistsError:
            raise ExistsError(f"rpc error: code = AlreadyExists desc = network with name "
                              f"{network['spec']['name']} already exists") from None
        return networks.public(self.store.get("networks", network["id"]))

    def list_networks(self) -> list[dict]:
        return [networks.public(n) for n in self.store.list("networks")]

    def inspect_network(self, ref: str) -> dict:
        return networks.public(self.network(ref))

    async def remove_network(self, ref: str) -> str:
        network = self.network(ref)
        await self.store.commit([networks.removal_op(self.store, network)])
        return network["id"]

    # -- secrets and configs ------------------------------------------------------------
    def _object(self, kind: str, ref: str) -> dict:
        key = secrets.KINDS[kind]
        return resolve_stored(self.store, key, ref, kind)

    async def create_object(self, kind: str, body) -> dict:
        obj = secrets.new_object(kind, body, self.sealer)
        try:
            await self.store.commit([{"op": "create", "kind": secrets.KINDS[kind], "obj": obj}])
        except ExistsError:
            raise ExistsError(f"rpc error: code = AlreadyExists desc = {kind} {obj['spec']['name']} "
                              "already exists") from None
        return secrets.public(self.store.get(secrets.KINDS[kind], obj["id"]))

    def list_objects(self, kind: str) -> list[dict]:
        return [secrets.public(o) for o in self.store.list(secrets.KINDS[kind])]

    def inspect_object(self, kind: str, ref: str) -> dict:
        return secrets.public(self._object(kind, ref))

    async def remove_object(self, kind: str, ref: str) -> str:
        obj = self._object(kind, ref)
        await self.store.commit([secrets.removal_op(self.store, kind, obj)])
        return obj["id"]

    # -- tasks and nodes -------------------------------------------------------------
    def list_tasks(self, service: str | None = None, node: str | None = None,
                   desired_state: str | None = None) -> list[dict]:
        if service:
            tasks = self.store.tables.service_tasks(self.service(service)["id"])
        else:
            tasks = self.store.list("tasks")
        if node:
            node_id = self.node(node)["id"]
            tasks = [t for t in tasks if t.get("node_id") == node_id]
        if desired_state == "running":
            tasks = [t for t in tasks if t["desired_state"] <= TaskState.RUNNING]
        elif desired_state == "shutdown":
            tasks = [t for t in tasks if t["desired_state"] > TaskState.RUNNING]
        return sorted(tasks, key=lambda t: (t["service_name"], t.get("slot") or 0, -t["created_at"]))

    def node(self, ref: str) -> dict:
        nodes = self.store.list("nodes")
        return resolve(nodes, ref, "node",
                       lambda name: next((n for n in nodes
                                          if n.get("description", {}).get("hostname") == name), None))

    async def update_node(self, ref: str, version: int, data) -> dict:
        """Change what an operator owns on a node: availability and labels."""
        node = self.node(ref)
        if not isinstance(data, dict):
            raise SpecError("node", "the body must be a JSON object with availability and/or labels")
        unknown = set(data) - {"availability", "labels", "role"}
        if unknown:
            raise SpecError(sorted(unknown)[0], "unknown field; use availability, labels")
        spec = dict(node["spec"])
        if "availability" in data:
            if data["availability"] not in AVAILABILITIES:
                raise SpecError("availability", f"must be one of {', '.join(AVAILABILITIES)}, "
                                                f"got {data['availability']!r}")
            spec["availability"] = data["availability"]
        if "labels" in data:
            labels = data["labels"]
            if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in labels.items()):
                raise SpecError("labels", "must be a map of strings to strings")
            spec["labels"] = labels
        if data.get("role", spec["role"]) != spec["role"]:
            spec["role"] = self._checked_role_change(node, data["role"])
        await self.store.commit([{"op": "patch", "kind": "nodes", "id": node["id"], "expect": version,
                                  "set": {"spec": spec}}])
        return self.store.get("nodes", node["id"])

    def _checked_role_change(self, node: dict, role) -> str:
        if role not in ("worker", "manager"):
            raise SpecError("role", f"must be worker or manager, got {role!r}")
        if role == "manager":
            theirs = wire.announced_version(node.get("description", {}))
            if theirs != wire.VERSION:
                raise ConflictError(f"node {node['id']} runs a swarmpy whose Raft wire is version {theirs} and "
                                    f"the managers' is version {wire.VERSION}: upgrade swarmpy on it (and restart "
                                    "its daemon) before promoting it")
            return role
        managers = [n for n in self.store.list("nodes") if n["spec"].get("role") == "manager"]
        if len(managers) == 1:
            raise ConflictError("rpc error: code = FailedPrecondition desc = attempting to demote the last "
                                "manager of the swarm")
        # The members left must still have a majority reachable, or the cluster stops.
        members = [m for m in self.store.members() if m != node.get("manager_status", {}).get("raft_addr")]
        reachable = sum(1 for m in members if self.store.reachable(m))
        if reachable <= len(members) // 2:
            raise ConflictError(f"rpc error: code = FailedPrecondition desc = can't demote node {node['id']}: "
                                f"only {reachable} of the {len(members)} managers left would be reachable, "
                                "which is no quorum; bring managers back first")
        return role

    def list_nodes(self) -> list[dict]:
        leader = self.store.leader()
        nodes = []
        for node in self.store.list("nodes"):
            node = dict(node)
            status = node.get("manager_status")
            if status:
                # Reachability as this manager's Raft sees it now, not as it was stored.
                reachable = self.store.reachable(status.get("raft_addr", ""))
                node["manager_status"] = dict(status, leader=status.get("raft_addr") == leader,
                                              reachability="reachable" if reachable else "unreachable")
            nodes.append(node)
        return nodes

    def cluster(self) -> dict:
        cluster = self.store.get("cluster", "default") or {}
        return {k: cluster.get(k) for k in PUBLIC_CLUSTER_FIELDS}

    def join_tokens(self) -> dict:
        return dict((self.store.get("cluster", "default") or {}).get("join_tokens", {}))

    async def rotate_join_token(self, role) -> str:
        if role not in ("worker", "manager"):
            raise SpecError("role", f"must be worker or manager, got {role!r}")
        cluster = self.store.get("cluster", "default")
        token = ca.new_join_token(cluster["root_ca"]["cert"].encode())
        await self.store.commit([{"op": "patch", "kind": "cluster", "id": "default",
                                  "set": {f"join_tokens.{role}": token}}])
        return token

    async def remove_node(self, ref: str, force: bool) -> str:
        """Docker's rules: a manager must be demoted first; a live node needs --force."""
        node = self.node(ref)
        if node["spec"].get("role") == "manager":
            raise ConflictError(f"rpc error: code = FailedPrecondition desc = node {node['id']} is a cluster "
                                "manager and is a member of the raft cluster. It must be demoted to worker "
                                "before removal")
        if node.get("status", {}).get("state") == "ready" and not force:
            raise ConflictError(f"rpc error: code = FailedPrecondition desc = node {node['id']} is not down "
                                "and can't be removed")
        # Its certificate stops opening sessions: the dispatcher admits only stored nodes.
        await self.store.commit([{"op": "delete", "kind": "nodes", "id": node["id"], "expect": node["version"]}])
        return node["id"]
